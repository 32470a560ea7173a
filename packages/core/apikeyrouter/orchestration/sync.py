"""Keep this replica's key index in step with the others, from the store's change events.

The hot path reads keys from the local index only (``ctx.keys``), never the store. So that a
key invalidated, throttled, revoked or re-registered on one replica is skipped (or used) by all
of them, ``StoreEventSync`` consumes the store's change events in a background task and applies
them to the local index:

* ``state``: the transition (new state, reason, time, cooldown) as published by the store,
  which orders events exactly as it applied them; without a payload, the key is re-read.
* ``cooldown``: a cooldown was extended; the local one becomes the later of the two.
* ``put``: the key is re-read and its document (limits, weight, tags, models, exclusions,
  material, state) copied onto the local object, or indexed if new.
* ``delete``: the key is re-read; gone means it leaves the local index.
* ``resync`` (on subscribe and after every reconnect, since events published meanwhile are
  lost; and after a :class:`ResilientStateStore` recovers): every key is reloaded, and keys
  the store no longer has leave the index.

Local key objects are updated in place, so references held by in-flight requests stay valid.
Events this replica published itself (``origin`` equal to the store's ``instance_id``) are
skipped: the local index already has those changes. One bad event never stops the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any, Final

from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.domain.models.api_key import APIKey, KeyState
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.resilient_store import ResilientStateStore
from apikeyrouter.orchestration.context import RouterContext

__all__ = ["StoreEventSync"]

_log = get_logger("apikeyrouter.sync")

#: A key's configuration document, copied from the store on ``put``.
_DOC_FIELDS: Final = (
    "provider_id",
    "encrypted_material",
    "fingerprint",
    "limits",
    "weight",
    "tags",
    "metadata",
    "models",
    "excluded_models",
)
#: What a state change rewrites.
_STATE_FIELDS: Final = ("state", "state_reason", "state_changed_at", "cooldown_until")
_KEY_EVENTS: Final = frozenset({"state", "cooldown", "put", "delete"})
_RESYNC: Final = "resync"


def event_source(store: StateStore) -> Any | None:
    """The object whose ``subscribe_events`` feeds the sync: the store itself, or the primary
    inside a wrapper such as :class:`ResilientStateStore`."""
    for candidate in (store, getattr(store, "primary", None)):
        if candidate is not None and callable(getattr(candidate, "subscribe_events", None)):
            return candidate
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _later(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class StoreEventSync:
    """Apply other replicas' key changes to ``ctx.keys``, pushed by the store, never polled.

    ``await start()`` subscribes (a no-op returning False for a store without events, such as
    the in-memory one) and waits up to ``ready_timeout`` for the first full load; ``await
    stop()`` ends it. Counters: ``events_applied``, ``events_skipped``, ``reloads``,
    ``errors``.
    """

    #: Bound on handling one event (a store read), so a stalled store cannot wedge the task.
    handler_timeout_seconds = 5.0
    #: Backoff when the event stream itself fails, doubling from min to max.
    restart_min_seconds = 0.1
    restart_max_seconds = 5.0
    #: Beyond this many unhandled events, they are dropped for one full reload.
    max_queued_events = 10_000

    def __init__(self, ctx: RouterContext) -> None:
        self._ctx = ctx
        self._source = event_source(ctx.store)
        origin = getattr(self._source, "instance_id", None)
        self._origin: str | None = origin if isinstance(origin, str) else None
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self.events_applied = 0
        self.events_skipped = 0
        self.reloads = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        """Whether the store publishes change events at all."""
        return self._source is not None

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    @property
    def ready(self) -> bool:
        """True once the subscription is live and the index was loaded from the store."""
        return self._ready.is_set()

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, *, ready_timeout: float = 2.0) -> bool:
        """Start following the store's events; True once subscribed and loaded.

        Returns False for a store without events, or if the first load did not finish within
        ``ready_timeout`` (the sync then keeps trying in the background)."""
        if self._source is None:
            return False
        if not self.running:
            self._ready.clear()
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._pump(), name="store-sync-pump"),
                loop.create_task(self._work(), name="store-sync-apply"),
            ]
            store = self._ctx.store
            if isinstance(store, ResilientStateStore):
                store.add_listener(self._on_store_health)
        return await self.wait_ready(ready_timeout)

    async def wait_ready(self, timeout: float) -> bool:
        if self._ready.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        store = self._ctx.store
        if isinstance(store, ResilientStateStore):
            store.remove_listener(self._on_store_health)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            self._queue.get_nowait()
        self._ready.clear()

    # --- plumbing ---------------------------------------------------------------------------
    def _on_store_health(self, degraded: bool) -> None:
        if not degraded:  # back from an outage: whatever was missed, reload everything
            self._enqueue({"type": _RESYNC, "reason": "store_recovered"})

    def _enqueue(self, event: dict[str, Any]) -> None:
        if self._queue.qsize() >= self.max_queued_events:
            while not self._queue.empty():
                self._queue.get_nowait()
            _log.warning("store_sync_backlog_dropped", replaced_by="resync")
            event = {"type": _RESYNC, "reason": "backlog"}
        self._queue.put_nowait(event)

    async def _pump(self) -> None:
        """Move events from the store's subscription to the queue, restarting it if it ends."""
        assert self._source is not None
        delay = self.restart_min_seconds
        while True:
            try:
                async with contextlib.aclosing(self._source.subscribe_events()) as events:
                    async for event in events:
                        delay = self.restart_min_seconds
                        if isinstance(event, dict):
                            self._enqueue(event)
            except Exception as exc:
                _log.warning("store_sync_stream_failed", error=type(exc).__name__, delay=delay)
            await asyncio.sleep(delay)  # backoff before resubscribing
            delay = min(delay * 2, self.restart_max_seconds)

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                async with asyncio.timeout(self.handler_timeout_seconds):
                    await self.handle(event)
            except Exception as exc:
                self.errors += 1
                _log.warning(
                    "store_sync_event_failed",
                    event_type=event.get("type"),
                    key_id=event.get("key_id"),
                    error=type(exc).__name__,
                )

    # --- applying events --------------------------------------------------------------------
    async def handle(self, event: dict[str, Any]) -> None:
        """Apply one event to the local index (public for tests and custom transports)."""
        kind = event.get("type")
        if kind == _RESYNC:
            await self.reload()
            self._ready.set()
            return
        key_id = event.get("key_id")
        if (
            kind not in _KEY_EVENTS
            or not isinstance(key_id, str)
            or (self._origin is not None and event.get("origin") == self._origin)
        ):
            self.events_skipped += 1
            return
        keys = self._ctx.keys
        current = keys.find(key_id)
        if current is not None and kind == "state" and self._apply_transition(current, event):
            self.events_applied += 1
            return
        if current is not None and kind == "cooldown":
            until = _number(event.get("cooldown_until"))
            if until is not None:
                current.cooldown_until = _later(current.cooldown_until, until)
                self.events_applied += 1
                return
        fresh = await self._ctx.store.get_key(key_id)
        if fresh is None:
            self._forget(key_id)
        else:
            self.apply_key(fresh)
        self.events_applied += 1

    @staticmethod
    def _apply_transition(key: APIKey, event: dict[str, Any]) -> bool:
        """Take the new state straight from a ``state`` event; False if it carries none."""
        value = event.get("state")
        if not isinstance(value, str):
            return False
        try:
            state = KeyState(value)
        except ValueError:
            return False
        at = _number(event.get("at"))
        reason = event.get("reason")
        cooldown = event.get("cooldown_until")
        if at is None or (reason is not None and not isinstance(reason, str)):
            return False
        if cooldown is not None and (cooldown := _number(cooldown)) is None:
            return False
        key.state = state
        key.state_reason = reason
        key.state_changed_at = at
        key.cooldown_until = cooldown
        return True

    def apply_key(self, fresh: APIKey) -> APIKey:
        """Make the local key with ``fresh.id`` look like ``fresh`` (the store's copy), in
        place; index ``fresh`` itself if the key is new here."""
        keys = self._ctx.keys
        current = keys.find(fresh.id)
        if current is None:
            keys.index(fresh)
            return fresh
        if current is fresh:
            return current
        if current.provider_id != fresh.provider_id:
            keys.move(current, fresh.provider_id)
        for name in _DOC_FIELDS:
            setattr(current, name, getattr(fresh, name))
        if fresh.state is current.state and fresh.state_changed_at == current.state_changed_at:
            # The same transition: keep a cooldown extended since (set_cooldown is max-wins).
            current.cooldown_until = _later(current.cooldown_until, fresh.cooldown_until)
            current.state_reason = fresh.state_reason
        else:
            for name in _STATE_FIELDS:
                setattr(current, name, getattr(fresh, name))
        return current

    def _forget(self, key_id: str) -> None:
        self._ctx.keys.forget(key_id)
        self._ctx.circuits.pop(key_id, None)

    async def reload(self) -> int:
        """Reload every key from the store; drop local keys the store no longer has.

        Keys are pruned only when the listing is trustworthy: it came from the primary (not a
        degraded fallback) and is not empty, since an empty store next to a populated index
        is far more likely a Redis that lost its data than an operator deleting every key."""
        store = self._ctx.store
        keys = self._ctx.keys
        if isinstance(store, ResilientStateStore):
            await store.restore_if_wiped()
        before = {key.id for key in keys.list_keys()}  # only keys indexed before the read
        listed = await store.list_keys()
        for key in listed:
            self.apply_key(key)
        missing = before - {key.id for key in listed}
        degraded = isinstance(store, ResilientStateStore) and store.is_degraded
        if missing and listed and not degraded:
            for key_id in missing:
                self._forget(key_id)
        elif missing:
            _log.warning("store_sync_prune_skipped", missing=len(missing), listed=len(listed))
        self.reloads += 1
        return len(listed)
