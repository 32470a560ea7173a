"""Schema of the MongoDB state store: its collections, indexes and numbered migrations.

The schema version lives in ``meta`` (``{_id: "schema", version}``, plus one
``migration:<n>`` record per step applied). ``migrate`` applies
every migration above it in order and records each one; ``MongoStateStore.initialize`` calls it
at start, and ``scripts/migrate_db.py`` runs it (or only reports) from the command line.

Every migration is idempotent (index creation is, backfills only touch documents that lack the
field), because two replicas starting at once may both run one; the recorded version only moves
forward (``$max``) and each step's history record is written once (``$setOnInsert``). A database
whose version is newer than this code refuses to start: old code must not write a newer layout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import CollectionInvalid

from apikeyrouter.infrastructure.state_store.mongo_codec import utc
from apikeyrouter.utils.exceptions import ConfigurationError

Database = AsyncDatabase[dict[str, Any]]

KEYS = "keys"
WINDOWS = "windows"
CIRCUITS = "circuits"
AUDIT = "audit"
DECISIONS = "decisions"
USAGE_LEDGER = "usage_ledger"
POLICIES = "policies"
BUDGETS = "budgets"
META = "meta"
COLLECTIONS = (KEYS, WINDOWS, CIRCUITS, AUDIT, DECISIONS, USAGE_LEDGER, POLICIES, BUDGETS, META)

SCHEMA_ID = "schema"
HISTORY_PREFIX = "migration:"
#: Retention given to decisions written before v2, which stored no expiry.
LEGACY_DECISION_TTL_SECONDS = 7 * 86_400

_BASE_INDEXES: dict[str, list[IndexModel]] = {
    KEYS: [
        IndexModel([("provider_id", ASCENDING), ("seq", ASCENDING)], name="provider_seq"),
        IndexModel([("seq", ASCENDING)], name="seq"),
    ],
    # Counter documents carry their own wall-clock expiry (longest window plus grace).
    WINDOWS: [IndexModel([("exp", ASCENDING)], name="exp_ttl", expireAfterSeconds=0)],
    AUDIT: [
        IndexModel([("seq", DESCENDING)], name="seq"),
        IndexModel([("key_id", ASCENDING), ("seq", DESCENDING)], name="key_seq"),
    ],
    DECISIONS: [IndexModel([("seq", DESCENDING)], name="seq")],
    USAGE_LEDGER: [
        IndexModel([("day", ASCENDING)], name="day"),
        IndexModel([("key_id", ASCENDING), ("day", ASCENDING)], name="key_day"),
        IndexModel([("client_id", ASCENDING), ("day", ASCENDING)], name="client_day"),
        IndexModel([("model", ASCENDING), ("day", ASCENDING)], name="model_day"),
    ],
    BUDGETS: [IndexModel([("seq", ASCENDING)], name="seq")],
}


async def _v1_collections_and_indexes(db: Database) -> None:
    existing = set(await db.list_collection_names())
    for name in COLLECTIONS:
        if name not in existing:
            with contextlib.suppress(CollectionInvalid):  # created meanwhile by a replica
                await db.create_collection(name)
    for name, indexes in _BASE_INDEXES.items():
        await db[name].create_indexes(indexes)


async def _v2_decisions_expire(db: Database) -> None:
    """Routing decisions are history, not records: give each an ``expire_at`` (backfilled from
    its own time for decisions stored before) and let a TTL index drop them. The backfill
    replaces whole documents because nx-27017 stores a date given to ``$set`` as text."""
    decisions = db[DECISIONS]
    async for raw in decisions.find({"expire_at": {"$exists": False}}):
        at = float(raw.get("at") or time.time())
        expire_at = utc(at) + timedelta(seconds=LEGACY_DECISION_TTL_SECONDS)
        await decisions.replace_one(
            {"_id": raw["_id"], "expire_at": {"$exists": False}}, {**raw, "expire_at": expire_at}
        )
    await decisions.create_indexes(
        [IndexModel([("expire_at", ASCENDING)], name="expire_at_ttl", expireAfterSeconds=0)]
    )


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Database], Awaitable[None]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create collections and indexes", _v1_collections_and_indexes),
    Migration(2, "decisions expire: backfill expire_at, TTL index", _v2_decisions_expire),
)
LATEST_VERSION = MIGRATIONS[-1].version


async def schema_version(db: Database) -> int:
    raw = await db[META].find_one({"_id": SCHEMA_ID})
    return 0 if raw is None else int(raw["version"])


async def schema_history(db: Database) -> list[dict[str, Any]]:
    """One record per applied migration, oldest first: version, name, applied_at."""
    ids = [f"{HISTORY_PREFIX}{m.version}" for m in MIGRATIONS]
    cursor = db[META].find({"_id": {"$in": ids}}, {"_id": 0})
    return sorted([raw async for raw in cursor], key=lambda raw: int(raw["version"]))


def pending_migrations(current: int, target: int = LATEST_VERSION) -> list[Migration]:
    if current > LATEST_VERSION:
        raise ConfigurationError(
            f"database schema version {current} is newer than this apikeyrouter knows "
            f"({LATEST_VERSION}); upgrade apikeyrouter instead of running it on this database"
        )
    return [m for m in MIGRATIONS if current < m.version <= target]


async def _record(db: Database, migration: Migration) -> None:
    """History first, then the version (``$max``: it only ever moves forward, even when two
    replicas record the same step). History records are separate documents because they are
    written with ``$setOnInsert`` scalars only, which every wire-compatible server handles."""
    await db[META].update_one(
        {"_id": f"{HISTORY_PREFIX}{migration.version}"},
        {
            "$setOnInsert": {
                "version": migration.version,
                "name": migration.name,
                "applied_at": utc(time.time()),
            }
        },
        upsert=True,
    )
    await db[META].update_one(
        {"_id": SCHEMA_ID}, {"$max": {"version": migration.version}}, upsert=True
    )


async def migrate(db: Database, *, target: int = LATEST_VERSION) -> list[Migration]:
    """Apply every migration above the stored version up to ``target``; return those applied."""
    applied = []
    for migration in pending_migrations(await schema_version(db), target):
        await migration.apply(db)
        await _record(db, migration)
        applied.append(migration)
    return applied
