"""A state store that survives its backend going away: fail-open or fail-closed, then resync.

``ResilientStateStore`` wraps a shared store (Redis, usually) and keeps three promises:

* **No hang.** Every call to the primary is bounded by ``op_timeout_seconds``, so a stalled
  server (or an exhausted connection pool) never holds a request past its deadline.
* **No crash.** A connection or timeout error marks the primary unavailable (logged once per
  outage, counted in ``degraded_operations``); the operation is then answered per ``mode``.
  Store trouble never leaves the wrapper as anything but a :class:`StoreUnavailableError`.
* **Recovery.** While degraded no request touches the primary; a background task pings it at
  most every ``retry_after_seconds``. When it answers, what changed locally during the outage
  is pushed back (key documents, key states by last writer wins on ``state_changed_at``,
  cooldowns, audit records and usage), and only then does the wrapper switch back.

Modes:

``"open"``
    Keep serving from ``local`` (an :class:`InMemoryStateStore` unless given), which is kept
    warm while the primary is healthy (in both modes): every successful key put/read, state
    change, cooldown, audit record and usage change on the primary is mirrored there. While
    degraded, reservations therefore enforce limits **per process only**: N replicas may
    together admit up to N times a key's limit until the primary returns. Circuit breakers
    and routing decisions restart from the local view and are not pushed back.
``"closed"``
    Refuse new work: operations that admit a request, read shared truth or change
    configuration (``reserve``, ``try_acquire_probe``, key puts, reads and deletes, usage and
    cooldown reads, listings) raise :class:`StoreUnavailableError` (HTTP 503 with
    ``retry_after``). Bookkeeping for work already admitted (``commit``, ``release``,
    ``charge``, ``set_cooldown``, ``compare_and_set_state``, circuit and audit records,
    decisions) is recorded locally and replayed on recovery instead: a request that was
    already served upstream must not turn into a 503, and its usage must not be forgotten.

Known limits: usage replayed on recovery lands in the original window slots, so windows that
have already ended are not charged again; a Redis that restarts empty gets this process's keys
back (``restore_lost_keys``), which can resurrect a key that was deleted elsewhere while this
process could not hear about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal, TypeVar

from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitSnapshot,
    FinishedCommit,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    StateStore,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyState, StateTransition
from apikeyrouter.domain.models.quota_state import WindowUsage
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.infrastructure.state_store.window_counter import BUCKETS_PER_WINDOW
from apikeyrouter.utils.exceptions import ApiKeyRouterError

__all__ = [
    "ResilientStateStore",
    "StoreMode",
    "StoreUnavailableError",
    "is_store_error",
    "is_unavailable_error",
]

T = TypeVar("T")
StoreMode = Literal["open", "closed"]
DegradedListener = Callable[[bool], None]

_log = get_logger("apikeyrouter.state_store.resilient")

#: Backends whose exceptions are recognised without importing them (see ``is_store_error``).
STORE_ERROR_MODULES: Final = ("redis", "pymongo", "motor")
_UNAVAILABLE_MARKERS: Final = ("Connection", "Timeout", "AutoReconnect")

#: Fields a state change rewrites; everything else on a key is its configuration document.
_STATE_FIELDS: Final = ("state", "state_reason", "state_changed_at", "cooldown_until")

#: Operations that only record the outcome of work already admitted. In "closed" mode they are
#: kept locally and replayed on recovery instead of failing a request that was already served.
_RECORDING_OPS: Final = frozenset(
    {
        "commit",
        "release",
        "charge",
        "set_cooldown",
        "compare_and_set_state",
        "record_success",
        "record_failure",
        "append_audit",
        "record_decision",
        "write_batch",
    }
)


class StoreUnavailableError(ApiKeyRouterError):
    """The shared state store cannot be reached (fail-closed mode) or answered with an error.

    ``retry_after`` (seconds) is when the store will next be tried."""

    status = 503
    error_type = "service_unavailable"
    code = "store_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _module_root(cls: type) -> str:
    return cls.__module__.partition(".")[0]


def is_unavailable_error(exc: BaseException, modules: Sequence[str] = STORE_ERROR_MODULES) -> bool:
    """True for errors that mean "the store cannot be reached right now".

    Built-in ``ConnectionError``/``OSError``/``TimeoutError``, and any exception with a class in
    its MRO from a store client package (``redis``, ``pymongo``, ...) whose name says
    connection or timeout, found by name so this module imports no client library."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    return any(
        _module_root(cls) in modules and any(m in cls.__name__ for m in _UNAVAILABLE_MARKERS)
        for cls in type(exc).__mro__
    )


def is_store_error(exc: BaseException, modules: Sequence[str] = STORE_ERROR_MODULES) -> bool:
    """Unavailability, or any other error raised by a store client package."""
    return is_unavailable_error(exc, modules) or any(
        _module_root(cls) in modules for cls in type(exc).__mro__
    )


class _Fallback:
    """Marker: the primary did not answer; serve the operation from the local store."""

    __slots__ = ()


_FALLBACK: Final = _Fallback()


def _copy(key: APIKey) -> APIKey:
    """An independent copy (``encrypted_material`` included), so the local mirror never
    aliases objects the caller or the primary keep mutating."""
    return key.model_copy(deep=True)


def _usage_checks(reservation: Reservation) -> list[tuple[str, WindowLimit, float]]:
    """The counters a granted reservation charged, as every store picks them."""
    checks = [
        (reservation.key_id, limit, amount)
        for limit in reservation.limits
        if (amount := reservation.amounts.get(limit.metric, 0.0))
    ]
    checks.extend((s.counter_id, s.limit, s.amount) for s in reservation.shared)
    return checks


_JournalSlot = tuple[str, str, float, int]  # counter id, metric, window seconds, bucket index


class ResilientStateStore(StateStore):
    """Delegates the whole :class:`StateStore` contract to ``primary``, bounded in time, and
    answers per ``mode`` while the primary is unavailable (see the module docstring).

    ``on_degraded(True)`` is called when an outage starts, ``on_degraded(False)`` once the
    primary is back and resynced; more listeners can be added with :meth:`add_listener`.
    """

    #: Packages whose exceptions count as store trouble (matched by module name).
    store_error_modules: tuple[str, ...] = STORE_ERROR_MODULES
    #: Outage bookkeeping is bounded; beyond these sizes, entries are dropped (and logged).
    journal_limit = 100_000
    audit_limit = 10_000

    def __init__(
        self,
        primary: StateStore,
        *,
        mode: StoreMode = "open",
        local: StateStore | None = None,
        op_timeout_seconds: float = 0.25,
        retry_after_seconds: float = 1.0,
        on_degraded: DegradedListener | None = None,
        probe_timeout_seconds: float | None = None,
        restore_lost_keys: bool = True,
    ) -> None:
        if mode not in ("open", "closed"):
            raise ValueError(f"mode must be 'open' or 'closed', not {mode!r}")
        if op_timeout_seconds <= 0 or retry_after_seconds <= 0:
            raise ValueError("op_timeout_seconds and retry_after_seconds must be positive")
        self._primary = primary
        self._local: StateStore = local if local is not None else InMemoryStateStore()
        self._mode: StoreMode = mode
        self._open = mode == "open"
        self._timeout = float(op_timeout_seconds)
        self._retry_after = float(retry_after_seconds)
        #: Probes and resync pushes run in the background, so they may wait longer.
        self._probe_timeout = float(probe_timeout_seconds or max(op_timeout_seconds, 1.0))
        self._restore_lost_keys = restore_lost_keys
        self._listeners: list[DegradedListener] = [on_degraded] if on_degraded else []
        self._degraded = False
        self._degraded_since: float | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False
        #: Operations answered locally (or refused) because the primary was unavailable.
        self.degraded_operations = 0
        #: Outages seen so far, and the error type that started the last one.
        self.outages = 0
        self.last_error: str | None = None
        #: Entries of outage bookkeeping dropped because the bounds were hit.
        self.dropped_records = 0
        # What changed locally during the outage, pushed to the primary on recovery.
        self._dirty_docs: set[str] = set()
        self._dirty_states: set[str] = set()
        self._deleted: set[str] = set()
        self._cooldowns: dict[str, float] = {}
        self._journal: dict[_JournalSlot, tuple[WindowLimit, float, float]] = {}
        self._audit: deque[StateTransition] = deque()

    # --- introspection ----------------------------------------------------------------------
    @property
    def primary(self) -> StateStore:
        return self._primary

    @property
    def local(self) -> StateStore:
        return self._local

    @property
    def mode(self) -> StoreMode:
        return self._mode

    @property
    def is_degraded(self) -> bool:
        return self._degraded

    @property
    def instance_id(self) -> str | None:
        """The primary's ``instance_id`` (stamped on its change events), if it has one."""
        value = getattr(self._primary, "instance_id", None)
        return value if isinstance(value, str) else None

    def status(self) -> dict[str, Any]:
        """A JSON-able health summary (for a readiness endpoint or metrics)."""
        since = self._degraded_since
        return {
            "mode": self._mode,
            "degraded": self._degraded,
            "degraded_for_seconds": None if since is None else time.monotonic() - since,
            "degraded_operations": self.degraded_operations,
            "outages": self.outages,
            "last_error": self.last_error,
            "pending_resync": self._pending_count(),
            "dropped_records": self.dropped_records,
        }

    def add_listener(self, listener: DegradedListener) -> None:
        """Call ``listener(True)`` when an outage starts and ``listener(False)`` after recovery.
        Listeners run inline and must not block; their errors are logged and ignored."""
        self._listeners.append(listener)

    def remove_listener(self, listener: DegradedListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    # --- the mechanism ----------------------------------------------------------------------
    def _is_store_error(self, exc: BaseException) -> bool:
        return is_store_error(exc, self.store_error_modules)

    async def _try(self, op: str, call: Callable[[], Awaitable[T]]) -> T | _Fallback:
        """Run ``call`` on the primary within the op timeout, or say to fall back."""
        if self._degraded:
            return self._fallback(op)
        try:
            async with asyncio.timeout(self._timeout):
                return await call()
        except Exception as exc:
            if not self._is_store_error(exc):
                raise
            if not is_unavailable_error(exc, self.store_error_modules):
                # The store answered, with an error: not an outage, but still store trouble.
                _log.warning("state_store_error", op=op, error=type(exc).__name__)
                raise StoreUnavailableError(
                    f"the state store failed during {op} ({type(exc).__name__})"
                ) from exc
            self._trip(op, exc)
            return self._fallback(op)

    def _fallback(self, op: str) -> _Fallback:
        self.degraded_operations += 1
        self._ensure_probe()
        if not self._open and op not in _RECORDING_OPS:
            raise StoreUnavailableError(
                f"the state store is unavailable ({op}); try again shortly",
                retry_after=self._retry_after,
            )
        return _FALLBACK

    def _trip(self, op: str, exc: BaseException) -> None:
        self.last_error = type(exc).__name__
        if self._degraded:
            return
        self._degraded = True
        self._degraded_since = time.monotonic()
        self.outages += 1
        _log.warning(
            "state_store_unavailable",
            op=op,
            error=type(exc).__name__,
            mode=self._mode,
            store=type(self._primary).__name__,
            probe_every_seconds=self._retry_after,
        )
        self._notify(True)
        self._ensure_probe()

    def _notify(self, degraded: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(degraded)
            except Exception:
                _log.exception("state_store_listener_failed", degraded=degraded)

    def _ensure_probe(self) -> None:
        if self._closed:
            return
        task = self._probe_task
        if task is None or task.done():
            self._probe_task = asyncio.get_running_loop().create_task(
                self._probe_loop(), name="resilient-store-probe"
            )

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        async with asyncio.timeout(self._probe_timeout):
            return await awaitable

    async def _probe(self) -> bool:
        """Whether the primary answers and is ready for traffic again: the probe also runs
        ``prepare`` (a restarted Redis gets its scripts back here), so the first requests after
        recovery do not pay for that and trip the op timeout."""
        try:
            if not await self._bounded(self._primary.ping()):
                return False
            await self._bounded(self._primary.prepare())
            return True
        except Exception as exc:
            if not self._is_store_error(exc):
                _log.warning("state_store_probe_failed", error=type(exc).__name__)
            return False

    async def _probe_loop(self) -> None:
        resync_warned = False
        while self._degraded and not self._closed:
            await asyncio.sleep(self._retry_after)  # the probe interval, not synchronisation
            if not await self._probe():
                continue
            try:
                clean = await self._resync()
            except Exception as exc:
                if not resync_warned:
                    _log.warning("state_store_resync_interrupted", error=type(exc).__name__)
                    resync_warned = True
                continue
            if clean and not self._pending_count() and self._degraded:
                # No await between the check and the switch: nothing can slip in between.
                self._recovered()

    def _recovered(self) -> None:
        since = self._degraded_since
        self._degraded = False
        self._degraded_since = None
        _log.info(
            "state_store_recovered",
            store=type(self._primary).__name__,
            mode=self._mode,
            outage_seconds=None if since is None else round(time.monotonic() - since, 3),
            degraded_operations=self.degraded_operations,
        )
        self._notify(False)

    # --- outage bookkeeping -----------------------------------------------------------------
    def _pending_count(self) -> int:
        return (
            len(self._dirty_docs)
            + len(self._dirty_states)
            + len(self._deleted)
            + len(self._cooldowns)
            + len(self._journal)
            + len(self._audit)
        )

    def _dropped(self, what: str) -> None:
        if not self.dropped_records:
            _log.warning("state_store_outage_records_dropped", what=what)
        self.dropped_records += 1

    def _journal_add(self, deltas: Sequence[tuple[str, WindowLimit, float]], at: float) -> None:
        """Remember usage to replay on the primary, merged per window bucket."""
        journal = self._journal
        for counter_id, limit, amount in deltas:
            if not amount:
                continue
            width = limit.window_seconds / BUCKETS_PER_WINDOW
            index = math.floor(at / width)
            slot = (counter_id, limit.metric, limit.window_seconds, index)
            entry = journal.get(slot)
            if entry is None:
                if len(journal) >= self.journal_limit:
                    self._dropped("usage")
                    continue
                # The middle of the bucket: immune to float rounding at its edges.
                journal[slot] = (limit, amount, (index + 0.5) * width)
            else:
                journal[slot] = (entry[0], entry[1] + amount, entry[2])

    def _audit_add(self, transition: StateTransition) -> None:
        if len(self._audit) >= self.audit_limit:
            self._dropped("audit")
            return
        self._audit.append(transition)

    async def restore_if_wiped(self) -> int:
        """Put this process's keys back if the primary holds none at all while the local copy
        does (a Redis restarted without persistence). Returns how many keys were restored.

        Does nothing when ``restore_lost_keys`` is off, the primary has any key, or an outage
        is in progress (recovery restores on its own before switching back)."""
        if self._degraded:
            return 0
        try:
            return await self._restore_if_wiped()
        except Exception as exc:
            if not self._is_store_error(exc):
                raise
            raise StoreUnavailableError(
                f"the state store is unavailable ({type(exc).__name__})",
                retry_after=self._retry_after,
            ) from exc

    async def _restore_if_wiped(self) -> int:
        if not self._restore_lost_keys:
            return 0
        local_keys = [k for k in await self._local.list_keys() if k.id not in self._deleted]
        if not local_keys:
            return 0
        remote: list[APIKey] = await self._bounded(self._primary.list_keys())
        if remote:
            return 0
        for key in local_keys:
            await self._bounded(self._primary.put_key(_copy(key)))
            until = await self._local.get_cooldown(key.id, -math.inf)
            if until is not None:
                await self._bounded(self._primary.set_cooldown(key.id, until))
            self._dirty_docs.discard(key.id)
            self._dirty_states.discard(key.id)
        _log.warning("state_store_restored_lost_keys", keys=len(local_keys))
        return len(local_keys)

    def _requeue(self, exc: BaseException, what: str) -> bool:
        """After a failed push: True to keep the item and abort this round (the store is in
        trouble, or we are being cancelled); False to drop it (it can never be pushed)."""
        if isinstance(exc, Exception) and not self._is_store_error(exc):
            _log.error("state_store_resync_item_dropped", what=what, error=type(exc).__name__)
            self.dropped_records += 1
            return False
        return True

    async def _resync(self) -> bool:
        """Push what changed locally during the outage; True when nothing is left.

        Each item is taken off its list before its push and put back if the push fails, so
        changes made by requests while this runs are kept for the next round."""
        primary = self._primary
        await self._restore_if_wiped()
        pushed = {"deleted": 0, "keys": 0, "cooldowns": 0, "usage": 0, "audit": 0}
        for key_id in list(self._deleted):
            self._deleted.discard(key_id)
            try:
                await self._bounded(primary.delete_key(key_id))
            except BaseException as exc:
                if self._requeue(exc, "delete"):
                    self._deleted.add(key_id)
                    raise
                continue
            pushed["deleted"] += 1
        # The audit trail first, so the original transitions precede their resync records.
        while self._audit:
            transition = self._audit.popleft()
            try:
                await self._bounded(primary.append_audit(transition))
            except BaseException as exc:
                if self._requeue(exc, "audit"):
                    self._audit.appendleft(transition)
                    raise
                continue
            pushed["audit"] += 1
        for key_id in list(self._dirty_docs | self._dirty_states):
            if await self._push_key(key_id):
                pushed["keys"] += 1
        for key_id, until in list(self._cooldowns.items()):
            if self._cooldowns.get(key_id) == until:
                del self._cooldowns[key_id]
            try:
                await self._bounded(primary.set_cooldown(key_id, until))
            except BaseException as exc:
                if self._requeue(exc, "cooldown"):
                    self._cooldowns[key_id] = max(until, self._cooldowns.get(key_id, until))
                    raise
                continue
            pushed["cooldowns"] += 1
        for slot, (limit, amount, at) in list(self._journal.items()):
            del self._journal[slot]
            try:
                await self._bounded(primary.charge(slot[0], limit, amount, at))
            except BaseException as exc:
                if self._requeue(exc, "usage"):
                    entry = self._journal.get(slot)
                    self._journal[slot] = (limit, amount + (entry[1] if entry else 0.0), at)
                    raise
                continue
            pushed["usage"] += 1
        if any(pushed.values()):
            _log.info("state_store_resynced", **pushed)
        return not self._pending_count()

    async def _push_key(self, key_id: str) -> bool:
        """Reconcile one key changed during the outage with the primary's copy.

        The local document wins for a key re-registered or updated here; the key state goes
        to whichever side changed it last (``state_changed_at``), through compare-and-set so
        the audit trail and the other replicas hear of it."""
        doc = key_id in self._dirty_docs
        self._dirty_docs.discard(key_id)
        self._dirty_states.discard(key_id)
        try:
            return await self._reconcile_key(key_id, doc)
        except BaseException as exc:
            if self._requeue(exc, "key"):
                (self._dirty_docs if doc else self._dirty_states).add(key_id)
                raise
            return False

    async def _reconcile_key(self, key_id: str, doc: bool) -> bool:
        local = await self._local.get_key(key_id)
        if local is None:
            return False
        primary = self._primary
        remote = await self._bounded(primary.get_key(key_id))
        if remote is None:
            if not doc:
                return False  # deleted elsewhere meanwhile: a state change revives nothing
            await self._bounded(primary.put_key(_copy(local)))
            if local.cooldown_until is not None:
                await self._bounded(primary.set_cooldown(key_id, local.cooldown_until))
            return True
        if doc:
            out = _copy(local)
            for name in _STATE_FIELDS:  # the state moves by compare-and-set below
                setattr(out, name, getattr(remote, name))
            await self._bounded(primary.put_key(out))
        if local.state_changed_at > remote.state_changed_at and (
            local.state,
            local.state_reason,
            local.cooldown_until,
        ) != (remote.state, remote.state_reason, remote.cooldown_until):
            transition = StateTransition(
                key_id=key_id,
                from_state=remote.state,
                to_state=local.state,
                reason=local.state_reason or "resync",
                at=local.state_changed_at,
                actor="resync",
            )
            cooldown = local.cooldown_until
            moved = await self._bounded(
                primary.compare_and_set_state(key_id, remote.state, transition, cooldown)
            )
            if not moved:  # changed under us: try again next round with a fresh read
                self._dirty_states.add(key_id)
                return False
        return True

    # --- keys -------------------------------------------------------------------------------
    async def put_key(self, key: APIKey) -> None:
        result = await self._try("put_key", lambda: self._primary.put_key(key))
        await self._local.put_key(_copy(key))
        if isinstance(result, _Fallback):
            self._dirty_docs.add(key.id)
            self._deleted.discard(key.id)

    async def get_key(self, key_id: str) -> APIKey | None:
        result = await self._try("get_key", lambda: self._primary.get_key(key_id))
        if isinstance(result, _Fallback):
            found = await self._local.get_key(key_id)
            return None if found is None else _copy(found)
        if result is None:
            await self._local.delete_key(key_id)
        else:
            await self._local.put_key(_copy(result))
        return result

    async def list_keys(self, provider_id: str | None = None) -> list[APIKey]:
        result = await self._try("list_keys", lambda: self._primary.list_keys(provider_id))
        if isinstance(result, _Fallback):
            return [_copy(k) for k in await self._local.list_keys(provider_id)]
        for key in result:
            await self._local.put_key(_copy(key))
        return result

    async def delete_key(self, key_id: str) -> bool:
        result = await self._try("delete_key", lambda: self._primary.delete_key(key_id))
        existed = await self._local.delete_key(key_id)
        if not isinstance(result, _Fallback):
            return result
        self._deleted.add(key_id)
        self._dirty_docs.discard(key_id)
        self._dirty_states.discard(key_id)
        self._cooldowns.pop(key_id, None)
        return existed

    async def compare_and_set_state(
        self,
        key_id: str,
        expected: KeyState,
        transition: StateTransition,
        cooldown_until: float | None = None,
    ) -> bool:
        result = await self._try(
            "compare_and_set_state",
            lambda: self._primary.compare_and_set_state(
                key_id, expected, transition, cooldown_until
            ),
        )
        local = self._local
        if isinstance(result, _Fallback):
            done = await local.compare_and_set_state(key_id, expected, transition, cooldown_until)
            if done:
                self._dirty_states.add(key_id)
                self._cooldowns.pop(key_id, None)  # the transition sets the cooldown exactly
                self._audit_add(transition)
            return done
        if result:
            # Mirror whatever the local copy says: the primary is the truth.
            mirrored = await local.get_key(key_id)
            if mirrored is not None:
                await local.compare_and_set_state(
                    key_id, mirrored.state, transition, cooldown_until
                )
        return result

    # --- usage windows ----------------------------------------------------------------------
    async def reserve(
        self, candidates: Sequence[ReservationRequest], now: float
    ) -> Reservation | ReservationRefusal:
        result = await self._try("reserve", lambda: self._primary.reserve(candidates, now))
        local = self._local
        if isinstance(result, _Fallback):
            granted = await local.reserve(candidates, now)
            if isinstance(granted, Reservation):
                self._journal_add(_usage_checks(granted), now)
            return granted
        if isinstance(result, Reservation):
            for counter_id, limit, amount in _usage_checks(result):
                await local.charge(counter_id, limit, amount, now)
        return result

    async def commit(self, reservation: Reservation, actual: dict[str, float]) -> None:
        result = await self._try("commit", lambda: self._primary.commit(reservation, actual))
        await self._local.commit(reservation, actual)
        if isinstance(result, _Fallback):
            self._journal_add(reservation.commit_deltas(actual), reservation.at)

    async def release(self, reservation: Reservation) -> None:
        result = await self._try("release", lambda: self._primary.release(reservation))
        await self._local.release(reservation)
        if isinstance(result, _Fallback):
            self._journal_add(reservation.release_deltas(), reservation.at)

    async def charge(self, key_id: str, limit: WindowLimit, amount: float, now: float) -> None:
        result = await self._try("charge", lambda: self._primary.charge(key_id, limit, amount, now))
        await self._local.charge(key_id, limit, amount, now)
        if isinstance(result, _Fallback):
            self._journal_add([(key_id, limit, amount)], now)

    async def window_usage(
        self, key_id: str, limits: Sequence[WindowLimit], now: float
    ) -> list[WindowUsage]:
        result = await self._try(
            "window_usage", lambda: self._primary.window_usage(key_id, limits, now)
        )
        if isinstance(result, _Fallback):
            return await self._local.window_usage(key_id, limits, now)
        return result

    async def window_usage_many(
        self, requests: Sequence[tuple[str, Sequence[WindowLimit]]], now: float
    ) -> list[list[WindowUsage]]:
        result = await self._try(
            "window_usage_many", lambda: self._primary.window_usage_many(requests, now)
        )
        if isinstance(result, _Fallback):
            return await self._local.window_usage_many(requests, now)
        return result

    # --- cooldowns and circuits -------------------------------------------------------------
    async def set_cooldown(self, key_id: str, until: float) -> None:
        result = await self._try("set_cooldown", lambda: self._primary.set_cooldown(key_id, until))
        await self._local.set_cooldown(key_id, until)
        if isinstance(result, _Fallback):
            self._cooldowns[key_id] = max(until, self._cooldowns.get(key_id, until))

    async def get_cooldown(self, key_id: str, now: float) -> float | None:
        result = await self._try("get_cooldown", lambda: self._primary.get_cooldown(key_id, now))
        if isinstance(result, _Fallback):
            return await self._local.get_cooldown(key_id, now)
        return result

    async def record_success(self, key_id: str, now: float) -> CircuitSnapshot:
        result = await self._try(
            "record_success", lambda: self._primary.record_success(key_id, now)
        )
        if isinstance(result, _Fallback):
            return await self._local.record_success(key_id, now)
        return result

    async def record_failure(
        self, key_id: str, now: float, policy: CircuitPolicy
    ) -> CircuitSnapshot:
        result = await self._try(
            "record_failure", lambda: self._primary.record_failure(key_id, now, policy)
        )
        if isinstance(result, _Fallback):
            return await self._local.record_failure(key_id, now, policy)
        return result

    async def circuit(self, key_id: str, now: float) -> CircuitSnapshot:
        result = await self._try("circuit", lambda: self._primary.circuit(key_id, now))
        if isinstance(result, _Fallback):
            return await self._local.circuit(key_id, now)
        return result

    async def circuits(self, key_ids: Sequence[str], now: float) -> list[CircuitSnapshot]:
        result = await self._try("circuits", lambda: self._primary.circuits(key_ids, now))
        if isinstance(result, _Fallback):
            return await self._local.circuits(key_ids, now)
        return result

    async def try_acquire_probe(self, key_id: str, now: float) -> bool:
        result = await self._try(
            "try_acquire_probe", lambda: self._primary.try_acquire_probe(key_id, now)
        )
        if isinstance(result, _Fallback):
            return await self._local.try_acquire_probe(key_id, now)
        return result

    # --- audit and decisions ----------------------------------------------------------------
    async def append_audit(self, transition: StateTransition) -> None:
        result = await self._try("append_audit", lambda: self._primary.append_audit(transition))
        await self._local.append_audit(transition)
        if isinstance(result, _Fallback):
            self._audit_add(transition)

    async def list_audit(
        self, key_id: str | None = None, limit: int = 100
    ) -> list[StateTransition]:
        result = await self._try("list_audit", lambda: self._primary.list_audit(key_id, limit))
        if isinstance(result, _Fallback):
            return await self._local.list_audit(key_id, limit)
        return result

    async def record_decision(self, decision: RoutingDecision) -> None:
        result = await self._try("record_decision", lambda: self._primary.record_decision(decision))
        if isinstance(result, _Fallback):  # kept for local inspection, not pushed back
            await self._local.record_decision(decision)

    async def write_batch(
        self, commits: Sequence[FinishedCommit], decisions: Sequence[RoutingDecision]
    ) -> None:
        """The primary's batch write, bounded like any call; the local mirror applies the
        commits too, and an outage journals them (and keeps the decisions locally) exactly
        as one commit or one decision at a time would."""
        result = await self._try(
            "write_batch", lambda: self._primary.write_batch(commits, decisions)
        )
        for reservation, actual in commits:
            await self._local.commit(reservation, actual)
        if isinstance(result, _Fallback):
            for reservation, actual in commits:
                self._journal_add(reservation.commit_deltas(actual), reservation.at)
            for decision in decisions:
                await self._local.record_decision(decision)

    async def recent_decisions(self, limit: int = 50) -> list[RoutingDecision]:
        result = await self._try("recent_decisions", lambda: self._primary.recent_decisions(limit))
        if isinstance(result, _Fallback):
            return await self._local.recent_decisions(limit)
        return result

    # --- lifecycle --------------------------------------------------------------------------
    async def ping(self) -> bool:
        """Whether the primary answers now, within the op timeout; never raises."""
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self._primary.ping())
        except Exception as exc:
            if not self._is_store_error(exc):
                raise
            return False

    async def close(self) -> None:
        self._closed = True
        task, self._probe_task = self._probe_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._bounded(self._primary.close())
        except Exception as exc:
            if not self._is_store_error(exc):
                raise
            _log.warning("state_store_close_failed", error=type(exc).__name__)
        await self._local.close()
