"""MongoDB state store: durable records, and usage counters that stay exact across processes.

Works alone (every replica on one database) or next to Redis (Redis for hot counters, MongoDB for
the records that must survive: keys, policies, budgets, audit trail, usage ledger, decisions).

Design
------
No multi-document transactions: MongoDB only has them on a replica set or sharded cluster, and a
standalone server must work too. Every change is one atomic single-document write instead,
guarded where it depends on what was read:

* **Counters.** One document per counter owner (a key, or a shared counter such as a budget or a
  client limit) holds all of its windows as the same bucket ring the memory store keeps, plus a
  random revision ``rev``. Arithmetic runs client-side on exactly the memory store's code
  (``mongo_codec.StoredWindow``), and a write is a compare-and-swap on ``rev`` (replace, or
  insert for a new owner). A lost swap means someone else changed the counter: re-read, retry.
* **Reservations spanning documents** (a key and its budgets). The chosen candidate's documents
  are swapped one by one in id order. All but the last also get a *pending marker* (a token with
  a settle deadline) in the same swap; once the last swap lands, the markers are cleared. If a
  swap fails, the earlier ones are rolled back (to the exact pre-image when nobody wrote since,
  otherwise by subtracting the reservation) and the whole reservation is retried. So no counter
  ever exceeds its limit, and a reader can tell "full" from "full of a reservation that may still
  roll back": a refusal that involves a marked document is not final, the reader looks again a
  moment later. A writer that dies mid-way leaves its amounts counted (the safe direction) and
  its marker expires after ``settle_seconds``.
* **Key state.** Compare-and-set is one ``update_one`` filtered on the expected state that also
  writes the cooldown (it lives on the key document) and the audit record into the document's
  outbox; the record is then inserted into ``audit`` under its own id (idempotent) and removed
  from the outbox. ``initialize`` delivers whatever a crash left in an outbox.
* **Circuits** use the same revision swap; cooldowns are max-wins swaps.
* **Inside one process** writers of the same counter documents queue on local locks (taken in
  id order) rather than race each other's swaps, so swap conflicts only arise between
  processes and a hot document (a budget that every request charges) does not turn into a
  storm of retries. Losers of a cross-process swap back off with jitter; after
  ``contention_timeout_seconds`` they raise :class:`StoreContentionError` with nothing charged.

Round trips (uncontended): a reservation on a key alone costs 2 (one read of every candidate's
counters, one swap); on a key plus n shared counters, 1 read + n+1 swaps + n marker clears sent
in parallel (2n+2 operations, n+3 sequential round trips); a refusal 1. Commit, release and
charge: a read and a swap per owner, owners in parallel (2 sequential round trips).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitSnapshot,
    CircuitState,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    StateStore,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyState, StateTransition
from apikeyrouter.domain.models.cost_model import Budget
from apikeyrouter.domain.models.policy import Policy, PolicyDocument
from apikeyrouter.domain.models.quota_state import WindowUsage
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store import mongo_indexes as schema
from apikeyrouter.infrastructure.state_store.mongo_codec import (
    LEDGER_FIELDS,
    CircuitRecord,
    CounterDoc,
    LedgerField,
    RawDoc,
    ReservationPlan,
    Sequence64,
    UsageTotals,
    cooldown_doc,
    cooldown_of,
    decode_budget,
    decode_decision,
    decode_key,
    decode_policies,
    decode_transition,
    encode_decision,
    encode_key,
    encode_policies,
    encode_transition,
    expiry,
    ledger_day,
    ledger_id,
    new_rev,
    plan_reservation,
    reservation_checks,
    status_doc,
    summarise_usage,
    usd_to_nanos,
    utc,
)
from apikeyrouter.infrastructure.state_store.window_counter import window_usage
from apikeyrouter.utils.encryption import looks_encrypted
from apikeyrouter.utils.exceptions import ApiKeyRouterError

Collection = AsyncCollection[RawDoc]
T = TypeVar("T")

_log = get_logger("apikeyrouter.state_store.mongo")


class StoreContentionError(ApiKeyRouterError):
    """A compare-and-swap kept losing for ``contention_timeout_seconds``. Nothing was charged."""

    status = 503
    error_type = "service_unavailable"
    code = "state_store_contention"


class _Backoff:
    """Jittered exponential backoff between swap attempts, with an overall deadline, so that
    writers colliding on one document spread out instead of colliding again in lock step."""

    __slots__ = ("_attempt", "_deadline")

    base_seconds = 0.0005
    cap_seconds = 0.02

    def __init__(self, timeout_seconds: float) -> None:
        self._deadline = time.monotonic() + timeout_seconds
        self._attempt = 0

    async def wait(self) -> None:
        if time.monotonic() > self._deadline:
            raise StoreContentionError("the state store is too contended to apply an update")
        self._attempt += 1
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** min(self._attempt, 16))
        await asyncio.sleep(random.uniform(0, ceiling))


class _LocalLocks:
    """Per-document locks inside one store instance.

    Writers of one process that target the same counter queue here instead of racing each
    other's swaps in the database: a swap conflict then only happens between processes, and a
    hot document (a budget every request charges) costs a queue, not a storm of retries. Locks
    are taken in id order, so two callers never wait on each other in a cycle, and are dropped
    once nobody holds or waits for them.
    """

    __slots__ = ("_locks", "_users")

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, ids: Iterable[str]) -> AsyncIterator[None]:
        ordered = sorted(set(ids))
        for name in ordered:
            self._users[name] = self._users.get(name, 0) + 1
        acquired: list[asyncio.Lock] = []
        try:
            for name in ordered:
                lock = self._locks.setdefault(name, asyncio.Lock())
                await lock.acquire()
                acquired.append(lock)
            yield
        finally:
            for lock in acquired:
                lock.release()
            for name in ordered:
                self._users[name] -= 1
                if not self._users[name]:
                    del self._users[name]
                    self._locks.pop(name, None)


async def _swap(collection: Collection, expected_rev: int | None, doc: RawDoc) -> bool:
    """Write ``doc`` if its document is still at ``expected_rev`` (None: does not exist yet)."""
    if expected_rev is None:
        try:
            await collection.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True
    result = await collection.replace_one({"_id": doc["_id"], "rev": expected_rev}, doc)
    return result.matched_count == 1


async def _upsert(collection: Collection, query: RawDoc, update: RawDoc) -> None:
    """``update_one(upsert=True)``, retried when two writers race to create the document (the
    loser gets a duplicate key error; its retry then updates the winner's document)."""
    for attempt in range(3):
        try:
            await collection.update_one(query, update, upsert=True)
            return
        except DuplicateKeyError:
            if attempt == 2:
                raise


class MongoStateStore(StateStore):
    """StateStore on MongoDB (pymongo's async API). See the module docstring for the design.

    ``client`` may be supplied (and is then not closed by ``close``). Call ``initialize`` once at
    start: it applies schema migrations (collections, indexes) and finishes interrupted audit
    deliveries. ``audit_limit`` caps the audit trail (None: keep everything).
    """

    def __init__(
        self,
        url: str = "mongodb://127.0.0.1:27017",
        *,
        database: str = "apikeyrouter",
        client: AsyncMongoClient[RawDoc] | None = None,
        decision_ttl_seconds: float = 7 * 86_400,
        audit_limit: int | None = None,
        settle_seconds: float = 5.0,
        contention_timeout_seconds: float = 10.0,
        server_selection_timeout_ms: int = 5_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if audit_limit is not None and audit_limit < 1:
            raise ValueError("audit_limit must be at least 1 (or None for no limit)")
        self._owns_client = client is None
        self._client: AsyncMongoClient[RawDoc] = client or AsyncMongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=server_selection_timeout_ms
        )
        self._db = self._client[database]
        self._keys: Collection = self._db[schema.KEYS]
        self._windows: Collection = self._db[schema.WINDOWS]
        self._circuits: Collection = self._db[schema.CIRCUITS]
        self._audit: Collection = self._db[schema.AUDIT]
        self._decisions: Collection = self._db[schema.DECISIONS]
        self._ledger: Collection = self._db[schema.USAGE_LEDGER]
        self._policies: Collection = self._db[schema.POLICIES]
        self._budgets: Collection = self._db[schema.BUDGETS]
        self._decision_ttl = float(decision_ttl_seconds)
        self._audit_limit = audit_limit
        self._settle_seconds = settle_seconds
        self._contention_timeout = contention_timeout_seconds
        self._wall = wall_clock
        self._seq = Sequence64()
        self._local = _LocalLocks()

    def _stamp(self) -> int:
        return self._seq.next(time.time_ns())

    def _backoff(self) -> _Backoff:
        return _Backoff(self._contention_timeout)

    # --- lifecycle --------------------------------------------------------------------------
    async def initialize(self) -> list[int]:
        """Bring the schema to the latest version and deliver audit records a crash left in key
        outboxes. Idempotent; returns the migration versions applied."""
        applied = await schema.migrate(self._db)
        await self.recover_outboxes()
        return [m.version for m in applied]

    async def recover_outboxes(self) -> int:
        delivered = 0
        async for raw in self._keys.find({"outbox": {"$exists": True}}, {"outbox": 1}):
            entries = sorted((raw.get("outbox") or {}).values(), key=lambda e: int(e["seq"]))
            if entries:
                await self._deliver_audit(str(raw["_id"]), entries)
                delivered += len(entries)
        if delivered:
            _log.info("mongo_audit_outbox_recovered", records=delivered)
        return delivered

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except (PyMongoError, OSError):
            return False
        return True

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    # --- keys -------------------------------------------------------------------------------
    # A key document also carries the key's effective cooldown (so compare-and-set changes state
    # and cooldown in one write). A cooldown for an id that is not a registered key lives in a
    # stub document without ``provider_id``; key queries skip stubs.

    async def put_key(self, key: APIKey) -> None:
        await _upsert(
            self._keys,
            {"_id": key.id},
            {
                "$set": encode_key(key),
                "$min": {"seq": self._stamp()},  # first insertion order survives overwrites
                "$setOnInsert": {"rev": new_rev()},
            },
        )

    async def get_key(self, key_id: str) -> APIKey | None:
        raw = await self._keys.find_one({"_id": key_id, "provider_id": {"$exists": True}})
        return None if raw is None else decode_key(raw)

    async def list_keys(self, provider_id: str | None = None) -> list[APIKey]:
        query: RawDoc = {"provider_id": {"$exists": True} if provider_id is None else provider_id}
        return [decode_key(raw) async for raw in self._keys.find(query).sort("seq", ASCENDING)]

    async def delete_key(self, key_id: str) -> bool:
        raw = await self._keys.find_one_and_delete({"_id": key_id})
        await asyncio.gather(
            self._windows.delete_one({"_id": key_id}), self._circuits.delete_one({"_id": key_id})
        )
        if raw is not None and raw.get("outbox"):
            for entry in raw["outbox"].values():
                await self._insert_audit(entry)
        return raw is not None and "provider_id" in raw

    async def swap_key_material(self, key_id: str, expected: str, new: str) -> bool:
        """Replace a key's ciphertext only if it is still ``expected`` (master key rotation:
        never overwrite a concurrent change with a re-encryption of the old value)."""
        if not looks_encrypted(new):
            raise ValueError(f"refusing to store key {key_id}: new material is not ciphertext")
        result = await self._keys.update_one(
            {"_id": key_id, "encrypted_material": expected},
            {"$set": {"encrypted_material": new}},
        )
        return result.matched_count == 1

    async def compare_and_set_state(
        self,
        key_id: str,
        expected: KeyState,
        transition: StateTransition,
        cooldown_until: float | None = None,
    ) -> bool:
        audit_id = secrets.token_hex(12)
        entry = encode_transition(transition, audit_id, self._stamp())
        result = await self._keys.update_one(
            {"_id": key_id, "state": expected.value},
            {
                "$set": {
                    "state": transition.to_state.value,
                    "status": status_doc(transition.reason, transition.at, cooldown_until),
                    "cooldown": cooldown_doc(cooldown_until),
                    "rev": new_rev(),
                    f"outbox.{audit_id}": entry,
                }
            },
        )
        if result.matched_count == 0:
            return False
        await self._deliver_audit(key_id, [entry])
        return True

    # --- usage windows ----------------------------------------------------------------------
    async def _load_counters(self, owners: Sequence[str]) -> dict[str, RawDoc]:
        if not owners:
            return {}
        cursor = self._windows.find({"_id": {"$in": list(owners)}})
        return {str(raw["_id"]): raw async for raw in cursor}

    async def reserve(
        self, candidates: Sequence[ReservationRequest], now: float
    ) -> Reservation | ReservationRefusal:
        if not candidates:
            return ReservationRefusal(None)
        owners = list(
            dict.fromkeys(owner for c in candidates for owner, _, _ in reservation_checks(c))
        )
        async with self._local.hold(owners):
            return await self._reserve(candidates, owners, now)

    async def _reserve(
        self, candidates: Sequence[ReservationRequest], owners: Sequence[str], now: float
    ) -> Reservation | ReservationRefusal:
        backoff = self._backoff()
        while True:
            raws = await self._load_counters(owners)
            docs = {owner: CounterDoc.from_raw(owner, raws.get(owner)) for owner in owners}
            plan = plan_reservation(candidates, docs, now, self._wall())
            if plan.chosen is not None:
                if await self._apply(plan, raws, now):
                    chosen = candidates[plan.chosen]
                    return Reservation(
                        chosen.key_id, dict(chosen.amounts), now, chosen.limits, chosen.shared
                    )
            elif not plan.settling:
                return ReservationRefusal(plan.retry_at)
            await backoff.wait()

    async def _apply(self, plan: ReservationPlan, raws: Mapping[str, RawDoc], now: float) -> bool:
        """Swap every document of the plan in id order (see the module docstring); False, with
        everything rolled back, if any of them changed since it was read."""
        owners = sorted(plan.writes)
        wall = self._wall()
        token = secrets.token_hex(8)
        marker = (token, wall + self._settle_seconds)
        written: list[tuple[str, int]] = []
        for position, owner in enumerate(owners):
            last = position == len(owners) - 1
            rev = new_rev()
            doc = plan.writes[owner].to_raw(rev, wall, None if last else marker)
            if not await _swap(self._windows, plan.writes[owner].rev, doc):
                await self._roll_back(written, raws, plan, token, now)
                return False
            written.append((owner, rev))
        if len(written) > 1:
            await asyncio.gather(*(self._clear_marker(owner, token) for owner, _ in written[:-1]))
        return True

    async def _clear_marker(self, owner: str, token: str) -> None:
        # A new revision, so a writer holding the marked version cannot write the marker back.
        await self._windows.update_one(
            {"_id": owner}, {"$unset": {f"p.{token}": ""}, "$set": {"rev": new_rev()}}
        )

    async def _roll_back(
        self,
        written: list[tuple[str, int]],
        raws: Mapping[str, RawDoc],
        plan: ReservationPlan,
        token: str,
        now: float,
    ) -> None:
        for owner, rev in written:
            before = raws.get(owner)
            if before is None:
                restored = (
                    await self._windows.delete_one({"_id": owner, "rev": rev})
                ).deleted_count
            else:
                restored = (
                    await self._windows.replace_one(
                        {"_id": owner, "rev": rev}, {**before, "rev": new_rev()}
                    )
                ).matched_count
            if not restored:  # someone wrote on top of ours: take ours back out
                deltas = [(limit, -amount) for o, limit, amount in plan.checks if o == owner]
                await self._adjust_owner(owner, now, deltas, drop_marker=token)

    async def _adjust_owner(
        self,
        owner: str,
        at: float,
        deltas: Sequence[tuple[WindowLimit, float]],
        drop_marker: str | None = None,
    ) -> None:
        """Add each delta to the bucket of ``at`` (as ``WindowCounter.add`` does), by swap.
        The caller holds the owner's local lock."""
        backoff = self._backoff()
        while True:
            raw = await self._windows.find_one({"_id": owner})
            doc = CounterDoc.from_raw(owner, raw)
            for limit, delta in deltas:
                doc.counter(limit).add(at, delta)
            if drop_marker is not None:
                doc.pending.pop(drop_marker, None)
            if await _swap(self._windows, doc.rev, doc.to_raw(new_rev(), self._wall())):
                return
            await backoff.wait()

    async def _adjust(self, at: float, deltas: Sequence[tuple[str, WindowLimit, float]]) -> None:
        by_owner: dict[str, list[tuple[WindowLimit, float]]] = {}
        for owner, limit, delta in deltas:
            by_owner.setdefault(owner, []).append((limit, delta))
        await asyncio.gather(*(self._adjust_locked(o, at, d) for o, d in by_owner.items()))

    async def _adjust_locked(
        self, owner: str, at: float, deltas: Sequence[tuple[WindowLimit, float]]
    ) -> None:
        async with self._local.hold([owner]):
            await self._adjust_owner(owner, at, deltas)

    async def commit(self, reservation: Reservation, actual: dict[str, float]) -> None:
        await self._adjust(reservation.at, reservation.commit_deltas(actual))

    async def release(self, reservation: Reservation) -> None:
        await self._adjust(reservation.at, reservation.release_deltas())

    async def charge(self, key_id: str, limit: WindowLimit, amount: float, now: float) -> None:
        await self._adjust(now, [(key_id, limit, amount)])

    async def window_usage(
        self, key_id: str, limits: Sequence[WindowLimit], now: float
    ) -> list[WindowUsage]:
        if not limits:
            return []
        doc = CounterDoc.from_raw(key_id, await self._windows.find_one({"_id": key_id}))
        return [window_usage(doc.counter(limit), limit, now) for limit in limits]

    # --- cooldowns --------------------------------------------------------------------------
    async def set_cooldown(self, key_id: str, until: float) -> None:
        backoff = self._backoff()
        while True:
            raw = await self._keys.find_one({"_id": key_id}, {"rev": 1, "cooldown": 1})
            current = cooldown_of(raw)
            if current is not None and until <= current:
                return
            fields = {"cooldown": cooldown_doc(until), "rev": new_rev()}
            if raw is None:
                if await _swap(self._keys, None, {"_id": key_id, **fields}):
                    return
            else:
                result = await self._keys.update_one(
                    {"_id": key_id, "rev": raw.get("rev")}, {"$set": fields}
                )
                if result.matched_count:
                    return
            await backoff.wait()

    async def get_cooldown(self, key_id: str, now: float) -> float | None:
        until = cooldown_of(await self._keys.find_one({"_id": key_id}, {"cooldown": 1}))
        if until is None or until <= now:
            return None
        return until

    # --- circuits ---------------------------------------------------------------------------
    async def _circuit_swap(
        self,
        key_id: str,
        now: float,
        step: Callable[[CircuitRecord], tuple[CircuitRecord | None, T]],
    ) -> T:
        """Run ``step`` on the refreshed circuit and store what it returns (None: no write)."""
        backoff = self._backoff()
        while True:
            raw = await self._circuits.find_one({"_id": key_id})
            updated, result = step(CircuitRecord.from_raw(raw).refreshed(now))
            if updated is None:
                return result
            doc = {"_id": key_id, "rev": new_rev(), "c": updated.to_raw()}
            if await _swap(self._circuits, None if raw is None else int(raw["rev"]), doc):
                return result
            await backoff.wait()

    async def record_success(self, key_id: str, now: float) -> CircuitSnapshot:
        closed = CircuitRecord()
        # Unconditional, and a missing document already reads as closed.
        await self._circuits.update_one(
            {"_id": key_id}, {"$set": {"c": closed.to_raw(), "rev": new_rev()}}
        )
        return closed.snapshot()

    async def record_failure(
        self, key_id: str, now: float, policy: CircuitPolicy
    ) -> CircuitSnapshot:
        def step(c: CircuitRecord) -> tuple[CircuitRecord, CircuitSnapshot]:
            c = replace(c, failures=c.failures + 1)
            if c.state is CircuitState.HALF_OPEN or c.failures >= policy.failure_threshold:
                c = replace(
                    c, state=CircuitState.OPEN, open_until=now + policy.open_seconds, probe=False
                )
            return c, c.snapshot()

        return await self._circuit_swap(key_id, now, step)

    async def circuit(self, key_id: str, now: float) -> CircuitSnapshot:
        raw = await self._circuits.find_one({"_id": key_id})
        return CircuitRecord.from_raw(raw).refreshed(now).snapshot()

    async def try_acquire_probe(self, key_id: str, now: float) -> bool:
        def step(c: CircuitRecord) -> tuple[CircuitRecord | None, bool]:
            if c.state is not CircuitState.HALF_OPEN or c.probe:
                return None, False
            return replace(c, probe=True), True

        return await self._circuit_swap(key_id, now, step)

    # --- audit and decisions ----------------------------------------------------------------
    async def _insert_audit(self, entry: Mapping[str, Any]) -> None:
        # A duplicate was delivered before (a retried outbox): the id makes delivery idempotent.
        with contextlib.suppress(DuplicateKeyError):
            await self._audit.insert_one(dict(entry))

    async def _deliver_audit(self, key_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
        for entry in entries:
            await self._insert_audit(entry)
            await self._keys.update_one({"_id": key_id}, {"$unset": {f"outbox.{entry['_id']}": ""}})
        await self._trim_audit()

    async def _trim_audit(self) -> None:
        if self._audit_limit is None:
            return
        cursor = self._audit.find({}, {"seq": 1}).sort("seq", DESCENDING)
        oldest_kept = [raw async for raw in cursor.skip(self._audit_limit).limit(1)]
        if oldest_kept:
            await self._audit.delete_many({"seq": {"$lte": oldest_kept[0]["seq"]}})

    async def append_audit(self, transition: StateTransition) -> None:
        await self._insert_audit(
            encode_transition(transition, secrets.token_hex(12), self._stamp())
        )
        await self._trim_audit()

    async def list_audit(
        self, key_id: str | None = None, limit: int = 100
    ) -> list[StateTransition]:
        """The last ``limit`` entries (of one key, or all), oldest first."""
        if limit <= 0:
            return []
        query = {} if key_id is None else {"key_id": key_id}
        cursor = self._audit.find(query).sort("seq", DESCENDING).limit(limit)
        newest_first = [decode_transition(raw) async for raw in cursor]
        return newest_first[::-1]

    async def record_decision(self, decision: RoutingDecision) -> None:
        wall = self._wall()
        await self._decisions.insert_one(
            encode_decision(decision, self._stamp(), expiry(self._decision_ttl, wall))
        )

    async def record_decisions(self, decisions: Sequence[RoutingDecision]) -> None:
        """Insert many decisions in one round trip (a write-behind queue's batch), in order."""
        if not decisions:
            return
        expire_at = expiry(self._decision_ttl, self._wall())
        await self._decisions.insert_many(
            [encode_decision(d, self._stamp(), expire_at) for d in decisions]
        )

    async def recent_decisions(self, limit: int = 50) -> list[RoutingDecision]:
        if limit <= 0:
            return []
        cursor = self._decisions.find({}).sort("seq", DESCENDING).limit(limit)
        newest_first = [decode_decision(raw) async for raw in cursor]
        return newest_first[::-1]

    # --- usage ledger -----------------------------------------------------------------------
    async def record_usage(
        self,
        *,
        key_id: str,
        provider_id: str,
        model: str,
        client_id: str | None,
        day: str | date,
        requests: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None:
        """Add usage to the ledger row of (key, provider, model, client, UTC day); cost is kept
        as integer nano-USD so concurrent additions are exact."""
        day_text = ledger_day(day)
        await _upsert(
            self._ledger,
            {"_id": ledger_id(key_id, provider_id, model, client_id, day_text)},
            {
                "$inc": {
                    "requests": int(requests),
                    "prompt_tokens": int(prompt_tokens),
                    "completion_tokens": int(completion_tokens),
                    "cost_nanos": usd_to_nanos(cost_usd),
                },
                "$setOnInsert": {
                    "key_id": key_id,
                    "provider_id": provider_id,
                    "model": model,
                    "client_id": client_id,
                    "day": day_text,
                },
            },
        )

    async def usage_summary(
        self,
        *,
        start_day: str | date | None = None,
        end_day: str | date | None = None,
        key_id: str | None = None,
        provider_id: str | None = None,
        model: str | None = None,
        client_id: str | None = None,
        group_by: Sequence[LedgerField] = ("key_id",),
    ) -> list[UsageTotals]:
        """Totals per group over the days ``start_day``..``end_day`` (inclusive), filtered by
        the given ids; sorted by group. ``group_by=()`` gives one grand total."""
        unknown = set(group_by) - set(LEDGER_FIELDS)
        if unknown:
            raise ValueError(f"cannot group usage by {sorted(unknown)}; use {LEDGER_FIELDS}")
        query: RawDoc = {
            name: value
            for name, value in (
                ("key_id", key_id),
                ("provider_id", provider_id),
                ("model", model),
                ("client_id", client_id),
            )
            if value is not None
        }
        days: RawDoc = {}
        if start_day is not None:
            days["$gte"] = ledger_day(start_day)
        if end_day is not None:
            days["$lte"] = ledger_day(end_day)
        if days:
            query["day"] = days
        fields = [*group_by, "requests", "prompt_tokens", "completion_tokens", "cost_nanos"]
        rows = [raw async for raw in self._ledger.find(query, dict.fromkeys(fields, 1))]
        return summarise_usage(rows, group_by)

    # --- policies and budgets ---------------------------------------------------------------
    async def save_policies(self, policies: Sequence[Policy]) -> int:
        """Store ``policies`` as the new active set, atomically (one document per revision, so
        earlier sets stay as history); return its revision."""
        PolicyDocument(policies=list(policies))  # names must be unique, as in a policy file
        backoff = self._backoff()
        while True:
            latest = await self._policies.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
            rev = 1 if latest is None else int(latest["_id"]) + 1
            try:
                await self._policies.insert_one(encode_policies(policies, rev, utc(self._wall())))
            except DuplicateKeyError:  # another replica saved at the same moment
                await backoff.wait()
                continue
            return rev

    async def load_policies(self) -> list[Policy]:
        latest = await self._policies.find_one({}, sort=[("_id", DESCENDING)])
        return [] if latest is None else decode_policies(latest)

    async def save_budget(self, budget: Budget) -> None:
        await _upsert(
            self._budgets,
            {"_id": budget.id},
            {"$set": {"budget": budget.model_dump(mode="json")}, "$min": {"seq": self._stamp()}},
        )

    async def delete_budget(self, budget_id: str) -> bool:
        return (await self._budgets.delete_one({"_id": budget_id})).deleted_count == 1

    async def load_budgets(self) -> list[Budget]:
        cursor = self._budgets.find({}).sort("seq", ASCENDING)
        return [decode_budget(raw) async for raw in cursor]
