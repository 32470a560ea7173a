"""Apply the MongoDB state store's schema migrations, or report where a database stands.

Run: ``uv run python scripts/migrate_db.py --url mongodb://HOST:PORT [--database D] [--status]``.
The migrations themselves (numbered, idempotent, recorded in the ``meta`` collection) live in
``apikeyrouter.infrastructure.state_store.mongo_indexes``, because the store applies the same
list when it starts; this is the command-line view of it. Exit status 1 on error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from apikeyrouter.infrastructure.state_store import mongo_indexes as schema
from apikeyrouter.utils.exceptions import ConfigurationError
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mongodb://127.0.0.1:27017", help="MongoDB URL")
    parser.add_argument("--database", default="apikeyrouter", help="database name")
    parser.add_argument(
        "--status", action="store_true", help="only print the version and pending migrations"
    )
    parser.add_argument("--timeout-ms", type=int, default=5_000, help="server selection timeout")
    return parser


async def run(url: str, database: str, *, status_only: bool, timeout_ms: int = 5_000) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, tz_aware=True, serverSelectionTimeoutMS=timeout_ms
    )
    try:
        db = client[database]
        current = await schema.schema_version(db)
        pending = schema.pending_migrations(current)
        print(f"database {database}: schema version {current} (latest {schema.LATEST_VERSION})")
        for record in await schema.schema_history(db):
            print(f"  applied v{record['version']}: {record['name']} at {record['applied_at']}")
        if status_only:
            for migration in pending:
                print(f"  pending v{migration.version}: {migration.name}")
            return 0
        applied = await schema.migrate(db)
        for migration in applied:
            print(f"applied v{migration.version}: {migration.name}")
        if not applied:
            print("nothing to apply")
        print(f"schema version now {await schema.schema_version(db)}")
        return 0
    except (PyMongoError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(
        run(args.url, args.database, status_only=args.status, timeout_ms=args.timeout_ms)
    )


if __name__ == "__main__":
    sys.exit(main())
