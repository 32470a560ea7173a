"""Re-encrypt every stored API key from the old master key to a new one.

Run: ``uv run python scripts/rotate_master_key.py [--store mongo|redis] --url URL
[--database D | --prefix P] [--dry-run]``, with the keys in ``APIKEYROUTER_MASTER_KEY`` (old)
and ``APIKEYROUTER_NEW_MASTER_KEY`` (new), or ``--old-key``/``--new-key`` (visible in the
process list: prefer the environment). Prints what it did; exit status 1 if any key failed or
changed meanwhile (running it again finishes the job: keys already rotated are skipped).
Afterwards, set ``APIKEYROUTER_MASTER_KEY`` to the new key everywhere the router runs.
The logic lives in ``apikeyrouter.infrastructure.state_store.key_rotation``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.infrastructure.state_store.key_rotation import rotate_master_key
from apikeyrouter.utils.encryption import MASTER_KEY_ENV, KeyEncryptor
from apikeyrouter.utils.exceptions import ConfigurationError

NEW_MASTER_KEY_ENV = "APIKEYROUTER_NEW_MASTER_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("mongo", "redis"), default="mongo")
    parser.add_argument("--url", required=True, help="MongoDB or Redis URL")
    parser.add_argument("--database", default="apikeyrouter", help="MongoDB database")
    parser.add_argument("--prefix", default="apikeyrouter:", help="Redis key prefix")
    parser.add_argument("--old-key", help=f"old master key (default: ${MASTER_KEY_ENV})")
    parser.add_argument("--new-key", help=f"new master key (default: ${NEW_MASTER_KEY_ENV})")
    parser.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
    return parser


def _open_store(args: argparse.Namespace) -> StateStore:
    if args.store == "redis":
        from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore

        return RedisStateStore(args.url, prefix=args.prefix)
    from apikeyrouter.infrastructure.state_store.mongo_store import MongoStateStore

    return MongoStateStore(args.url, database=args.database)


async def run(args: argparse.Namespace) -> int:
    old_key = args.old_key or os.environ.get(MASTER_KEY_ENV)
    new_key = args.new_key or os.environ.get(NEW_MASTER_KEY_ENV)
    if not old_key or not new_key:
        print(f"error: set {MASTER_KEY_ENV} and {NEW_MASTER_KEY_ENV}", file=sys.stderr)
        return 2
    try:
        old, new = KeyEncryptor(old_key), KeyEncryptor(new_key)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = _open_store(args)
    try:
        report = await rotate_master_key(store, old, new, dry_run=args.dry_run)
    finally:
        await store.close()
    print(report.summary())
    for key_id in report.failed:
        print(f"  failed (decrypts with neither key): {key_id}")
    for key_id in report.conflicts:
        print(f"  changed during rotation, run again: {key_id}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
