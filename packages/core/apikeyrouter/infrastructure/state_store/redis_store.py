"""Redis state store: hot state shared by every replica of the proxy.

Each operation that reads then writes is one Lua script (see ``redis_scripts``), so it is atomic
across processes and costs one round trip. Window arithmetic uses the caller's ``now``, never
the server clock, so the store behaves exactly like the in-memory one (and fake clocks work).

Key state and cooldown changes, and key puts/deletes, are published on ``{prefix}events`` from
inside the same scripts, so a replica that subscribes (``subscribe_events`` or
``start_listener``) can keep a local view in step with the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitSnapshot,
    CircuitState,
    CounterDelta,
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
from apikeyrouter.infrastructure.state_store import redis_scripts as lua
from apikeyrouter.infrastructure.state_store.redis_codec import (
    RedisKeys,
    audit_needle,
    decode_decision,
    decode_event,
    decode_key,
    decode_transition,
    encode_decision,
    encode_event,
    encode_key,
    encode_transition,
    num,
    opt_num,
    pairs_to_dict,
    parse_opt_num,
    text,
)
from apikeyrouter.infrastructure.state_store.redis_pool import WaitingConnectionPool
from apikeyrouter.infrastructure.state_store.window_counter import BUCKETS_PER_WINDOW
from apikeyrouter.utils.encryption import looks_encrypted

EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
#: Keys one pipelined bulk read covers (bounds the reply held in memory at once).
_KEYS_PER_READ_PIPELINE = 1000


def _circuit_reply(reply: list[Any]) -> tuple[CircuitSnapshot, bool]:
    """CIRCUIT's reply (state, failures, open_until, probe, acquired) as a snapshot."""
    state, failures, open_until, probe, acquired = reply
    snapshot = CircuitSnapshot(
        CircuitState(text(state)), int(text(failures)), parse_opt_num(open_until), bool(int(probe))
    )
    return snapshot, bool(int(acquired))


def _window_usages(limits: Sequence[WindowLimit], flat: list[Any]) -> list[WindowUsage]:
    """WINDOW_USAGE's reply (used, resets_at per window) as models."""
    return [
        WindowUsage(
            metric=limit.metric,
            window_seconds=limit.window_seconds,
            limit=limit.limit,
            used=float(text(flat[2 * i])),
            resets_at=parse_opt_num(flat[2 * i + 1]),
        )
        for i, limit in enumerate(limits)
    ]


_log = get_logger("apikeyrouter.state_store.redis")
_BUCKETS_TEXT = str(BUCKETS_PER_WINDOW)
#: Entries per append call: Lua's unpack() refuses a few thousand arguments.
_DECISIONS_PER_APPEND = 500


class RedisStateStore(StateStore):
    """StateStore on Redis. ``client`` may be supplied (and is then not closed by ``close``);
    otherwise one is built from ``url`` with a pool of ``max_connections`` that makes callers
    wait up to ``pool_timeout`` seconds for a free connection.

    ``cooldown_grace_seconds``: cooldown keys expire this long after their end by the server
    clock, so replica clock skew smaller than the grace never ends a cooldown early.
    """

    #: Reconnect backoff of the event listener, doubling from min to max.
    reconnect_min_seconds = 0.05
    reconnect_max_seconds = 5.0
    #: Silence on the event channel after which the listener pings, and then gives up on the
    #: connection if the pong does not come within the same interval (half-open TCP).
    listener_ping_seconds = 30.0
    _poll_seconds = 1.0

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "apikeyrouter:",
        client: Redis | None = None,
        decision_ttl_seconds: int = 86_400,
        audit_limit: int = 10_000,
        decision_limit: int = 1_000,
        cooldown_grace_seconds: float = 300.0,
        max_connections: int = 64,
        pool_timeout: float = 10.0,
    ) -> None:
        if audit_limit < 1 or decision_limit < 1:
            raise ValueError("audit_limit and decision_limit must be at least 1")
        if client is None:
            # A burst beyond ``max_connections`` waits for a free connection instead of failing
            # requests with "Too many connections" (see redis_pool for why not redis-py's own
            # blocking pool).
            pool = WaitingConnectionPool.from_url(
                url, decode_responses=True, max_connections=max_connections, timeout=pool_timeout
            )
            client = Redis.from_pool(pool)
            self._owns_client = True
        else:
            self._owns_client = False
        self._client: Redis = client
        self._names = RedisKeys(prefix)
        self._decision_ttl = int(decision_ttl_seconds)
        self._audit_limit = audit_limit
        self._decision_limit = decision_limit
        self._grace = num(cooldown_grace_seconds)
        self._listener: asyncio.Task[None] | None = None
        #: Stamped on every event this instance publishes, so a listener can skip its own.
        self.instance_id = secrets.token_hex(8)

    @property
    def channel(self) -> str:
        return self._names.events

    def _event(self, kind: str, key_id: str, **fields: Any) -> str:
        return encode_event({"type": kind, "key_id": key_id, "origin": self.instance_id, **fields})

    # --- keys -------------------------------------------------------------------------------
    async def put_key(self, key: APIKey) -> None:
        n = self._names
        await lua.PUT_KEY(
            self._client,
            [n.key(key.id), n.keys_index, n.provider_index(key.provider_id), n.sequence],
            [
                key.id,
                n.provider_index_prefix,
                n.events,
                self._event("put", key.id, provider_id=key.provider_id),
                *encode_key(key),
            ],
        )

    async def swap_key_material(self, key_id: str, expected: str, new: str) -> bool:
        """Replace a key's ciphertext only if it is still ``expected``, in one script (master
        key rotation: never overwrite a concurrent change with a re-encryption of the old
        value)."""
        if not looks_encrypted(new):
            raise ValueError(f"refusing to store key {key_id}: new material is not ciphertext")
        swapped = await lua.SWAP_MATERIAL(self._client, [self._names.key(key_id)], [expected, new])
        return bool(swapped)

    async def get_key(self, key_id: str) -> APIKey | None:
        raw = await self._client.hgetall(self._names.key(key_id))
        if not raw:
            return None
        return decode_key({text(k): text(v) for k, v in raw.items()})

    async def list_keys(self, provider_id: str | None = None) -> list[APIKey]:
        n = self._names
        index = n.keys_index if provider_id is None else n.provider_index(provider_id)
        flat = await lua.LIST_KEYS(self._client, [index], [n.key_prefix])
        return [
            decode_key(pairs_to_dict(flat[i + 1])) for i in range(0, len(flat), 2) if flat[i + 1]
        ]

    async def delete_key(self, key_id: str) -> bool:
        n = self._names
        existed = await lua.DELETE_KEY(
            self._client,
            [n.key(key_id), n.keys_index, n.cooldown(key_id), n.circuit(key_id)],
            [key_id, n.provider_index_prefix, n.events, self._event("delete", key_id)],
        )
        # Windows expire on their own; deleting them keeps a re-added key from inheriting usage.
        windows = [
            w async for w in self._client.scan_iter(match=n.window_pattern(key_id), count=1000)
        ]
        if windows:
            await self._client.unlink(*windows)
        return bool(existed)

    async def compare_and_set_state(
        self,
        key_id: str,
        expected: KeyState,
        transition: StateTransition,
        cooldown_until: float | None = None,
    ) -> bool:
        n = self._names
        event = self._event(
            "state",
            key_id,
            from_state=expected.value,
            state=transition.to_state.value,
            reason=transition.reason,
            cooldown_until=cooldown_until,
            at=transition.at,
        )
        done = await lua.COMPARE_AND_SET(
            self._client,
            [n.key(key_id), n.cooldown(key_id), n.audit],
            [
                expected.value,
                transition.to_state.value,
                orjson.dumps(transition.reason).decode(),
                num(transition.at),
                opt_num(cooldown_until),
                encode_transition(transition),
                self._audit_limit,
                self._grace,
                n.events,
                event,
            ],
        )
        return bool(done)

    # --- usage windows ----------------------------------------------------------------------
    @staticmethod
    def _checks(candidate: ReservationRequest) -> list[tuple[str, WindowLimit, float]]:
        """The counters a candidate must fit in, exactly as the memory store picks them: key
        windows whose metric has a non-zero amount, and every shared counter."""
        checks = [
            (candidate.key_id, limit, amount)
            for limit in candidate.limits
            if (amount := candidate.amounts.get(limit.metric, 0.0))
        ]
        checks.extend((s.counter_id, s.limit, s.amount) for s in candidate.shared)
        return checks

    async def reserve(
        self, candidates: Sequence[ReservationRequest], now: float
    ) -> Reservation | ReservationRefusal:
        if not candidates:
            return ReservationRefusal(None)
        keys: list[str] = []
        slots: dict[str, int] = {}
        numbers = [_BUCKETS_TEXT, num(now), str(len(candidates))]
        for candidate in candidates:
            checks = self._checks(candidate)
            numbers.append(str(len(checks)))
            for counter_id, limit, amount in checks:
                name = self._names.window(counter_id, limit.metric, limit.window_seconds)
                slot = slots.get(name)
                if slot is None:
                    keys.append(name)
                    slot = slots[name] = len(keys)
                numbers += [str(slot), num(limit.window_seconds), num(limit.limit), num(amount)]
        granted, value = await lua.RESERVE(self._client, keys, [" ".join(numbers)])
        if int(granted):
            chosen = candidates[int(value) - 1]
            return Reservation(
                chosen.key_id, dict(chosen.amounts), now, chosen.limits, chosen.shared
            )
        return ReservationRefusal(parse_opt_num(value))

    def _adjust_call(self, at: float, deltas: list[CounterDelta]) -> lua.ScriptCall:
        keys: list[str] = []
        args: list[str | int | float] = [BUCKETS_PER_WINDOW, num(at)]
        for counter_id, limit, delta in deltas:
            keys.append(self._names.window(counter_id, limit.metric, limit.window_seconds))
            args += [num(limit.window_seconds), num(delta)]
        return lua.ADJUST, keys, args

    async def _adjust(self, at: float, deltas: list[CounterDelta]) -> None:
        if deltas:
            script, keys, args = self._adjust_call(at, deltas)
            await script(self._client, keys, args)

    async def commit(self, reservation: Reservation, actual: dict[str, float]) -> None:
        await self._adjust(reservation.at, reservation.commit_deltas(actual))

    async def release(self, reservation: Reservation) -> None:
        await self._adjust(reservation.at, reservation.release_deltas())

    async def charge(self, key_id: str, limit: WindowLimit, amount: float, now: float) -> None:
        if amount:
            await self._adjust(now, [(key_id, limit, amount)])

    async def window_usage(
        self, key_id: str, limits: Sequence[WindowLimit], now: float
    ) -> list[WindowUsage]:
        if not limits:
            return []
        _, keys, args = self._window_usage_call(key_id, limits, now)
        return _window_usages(limits, await lua.WINDOW_USAGE(self._client, keys, args))

    async def window_usage_many(
        self, requests: Sequence[tuple[str, Sequence[WindowLimit]]], now: float
    ) -> list[list[WindowUsage]]:
        """Every key's windows in one pipelined round trip per chunk of keys."""
        calls = [self._window_usage_call(k, limits, now) for k, limits in requests if limits]
        answers = iter(await self._read_pipelined(calls))
        return [_window_usages(limits, next(answers)) if limits else [] for _, limits in requests]

    def _window_usage_call(
        self, key_id: str, limits: Sequence[WindowLimit], now: float
    ) -> lua.ScriptCall:
        keys = [self._names.window(key_id, lim.metric, lim.window_seconds) for lim in limits]
        args: list[str | int | float] = [BUCKETS_PER_WINDOW, num(now)]
        for limit in limits:
            args += [num(limit.window_seconds), num(limit.limit)]
        return lua.WINDOW_USAGE, keys, args

    # --- cooldowns and circuits -------------------------------------------------------------
    async def set_cooldown(self, key_id: str, until: float) -> None:
        await lua.SET_COOLDOWN(
            self._client,
            [self._names.cooldown(key_id)],
            [
                num(until),
                self._grace,
                self._names.events,
                self._event("cooldown", key_id, cooldown_until=until),
            ],
        )

    async def get_cooldown(self, key_id: str, now: float) -> float | None:
        until = parse_opt_num(await self._client.get(self._names.cooldown(key_id)))
        if until is None or until <= now:
            return None
        return until

    def _circuit_call(
        self, mode: str, key_id: str, now: float, policy: CircuitPolicy | None = None
    ) -> lua.ScriptCall:
        policy = policy or CircuitPolicy()
        args: list[str | int | float] = [
            mode, num(now), policy.failure_threshold, num(policy.open_seconds)
        ]  # fmt: skip
        return lua.CIRCUIT, [self._names.circuit(key_id)], args

    async def _circuit(
        self, mode: str, key_id: str, now: float, policy: CircuitPolicy | None = None
    ) -> tuple[CircuitSnapshot, bool]:
        _, keys, args = self._circuit_call(mode, key_id, now, policy)
        return _circuit_reply(await lua.CIRCUIT(self._client, keys, args))

    async def circuits(self, key_ids: Sequence[str], now: float) -> list[CircuitSnapshot]:
        """Every key's circuit in one pipelined round trip per chunk of keys."""
        calls = [self._circuit_call("read", key_id, now) for key_id in key_ids]
        return [_circuit_reply(reply)[0] for reply in await self._read_pipelined(calls)]

    async def _read_pipelined(self, calls: list[lua.ScriptCall]) -> list[Any]:
        """Read-only script calls, one pipelined round trip per ``_KEYS_PER_READ_PIPELINE``."""
        replies: list[Any] = []
        for start in range(0, len(calls), _KEYS_PER_READ_PIPELINE):
            replies += await lua.run_pipelined(
                self._client, calls[start : start + _KEYS_PER_READ_PIPELINE]
            )
        return replies

    async def record_success(self, key_id: str, now: float) -> CircuitSnapshot:
        return (await self._circuit("success", key_id, now))[0]

    async def record_failure(
        self, key_id: str, now: float, policy: CircuitPolicy
    ) -> CircuitSnapshot:
        return (await self._circuit("failure", key_id, now, policy))[0]

    async def circuit(self, key_id: str, now: float) -> CircuitSnapshot:
        return (await self._circuit("read", key_id, now))[0]

    async def try_acquire_probe(self, key_id: str, now: float) -> bool:
        return (await self._circuit("probe", key_id, now))[1]

    # --- audit and decisions ----------------------------------------------------------------
    async def append_audit(self, transition: StateTransition) -> None:
        await lua.APPEND_CAPPED(
            self._client,
            [self._names.audit],
            [self._audit_limit, 0, encode_transition(transition)],
        )

    async def list_audit(
        self, key_id: str | None = None, limit: int = 100
    ) -> list[StateTransition]:
        """The last ``limit`` entries (of one key, or all), oldest first."""
        if limit <= 0:
            return []
        if key_id is None:
            raw = await self._client.lrange(self._names.audit, -limit, -1)
        else:
            newest_first = await lua.AUDIT_FOR_KEY(
                self._client, [self._names.audit], [audit_needle(key_id), limit, 256]
            )
            raw = list(reversed(newest_first))
        return [decode_transition(r) for r in raw]

    async def record_decision(self, decision: RoutingDecision) -> None:
        script, keys, args = self._append_decisions([decision])
        await script(self._client, keys, args)

    def _append_decisions(self, decisions: Sequence[RoutingDecision]) -> lua.ScriptCall:
        args: list[str | int | float] = [self._decision_limit, self._decision_ttl]
        args += [encode_decision(decision) for decision in decisions]
        return lua.APPEND_CAPPED, [self._names.decisions], args

    async def write_batch(
        self, commits: Sequence[FinishedCommit], decisions: Sequence[RoutingDecision]
    ) -> None:
        """Every commit (one ADJUST each) and all the decisions (one append) in one pipelined
        round trip."""
        calls = [
            self._adjust_call(reservation.at, deltas)
            for reservation, actual in commits
            if (deltas := reservation.commit_deltas(actual))
        ]
        for start in range(0, len(decisions), _DECISIONS_PER_APPEND):
            calls.append(self._append_decisions(decisions[start : start + _DECISIONS_PER_APPEND]))
        await lua.run_pipelined(self._client, calls)

    async def recent_decisions(self, limit: int = 50) -> list[RoutingDecision]:
        if limit <= 0:
            return []
        raw = await self._client.lrange(self._names.decisions, -limit, -1)
        return [decode_decision(r) for r in raw]

    # --- lifecycle --------------------------------------------------------------------------
    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def prepare(self) -> None:
        """Drop idle pooled connections, then load every script in one pipelined round trip.

        After an outage the pool holds sockets to the server that died; redis-py notices one
        only if the peer's close has reached it before the connection is reused, so some
        requests right after recovery failed on them. Closing the idle ones makes the next
        commands connect afresh. A server that restarted also has no scripts, and the first
        EVALSHA of each would otherwise cost a NOSCRIPT reply, a SCRIPT LOAD and a retry
        while requests wait."""
        await self._client.connection_pool.disconnect(inuse_connections=False)
        async with self._client.pipeline(transaction=False) as pipe:
            for script in lua.ALL_SCRIPTS:
                pipe.script_load(script.source)
            loaded = await pipe.execute()
        for script, sha in zip(lua.ALL_SCRIPTS, loaded, strict=True):
            script.sha = sha

    async def close(self) -> None:
        await self.stop_listener()
        if self._owns_client:
            await self._client.aclose()

    # --- change events ----------------------------------------------------------------------
    async def subscribe_events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Yield change events from every replica, forever, reconnecting on errors.

        ``{"type": "resync"}`` is yielded once the subscription is confirmed and again after
        every reconnect: events published while disconnected are lost, so the consumer should
        then reload its whole view. Other types: ``state``, ``cooldown``, ``put``, ``delete``,
        each with ``key_id`` and ``origin`` (the publishing store's ``instance_id``).
        """
        delay = self.reconnect_min_seconds
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._names.events)
                async with contextlib.aclosing(self._pump(pubsub)) as events:
                    async for event in events:
                        delay = self.reconnect_min_seconds
                        yield event
            except (RedisError, OSError) as exc:
                _log.warning("redis_listener_reconnect", error=type(exc).__name__, delay=delay)
            finally:
                await _close_quietly(pubsub)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_seconds)

    async def _pump(self, pubsub: PubSub) -> AsyncGenerator[dict[str, Any], None]:
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        ping_sent: float | None = None
        while True:
            message = await pubsub.get_message(timeout=self._poll_seconds)
            now = loop.time()
            if message is None:
                if ping_sent is not None and now - ping_sent > self.listener_ping_seconds:
                    raise RedisConnectionError("no reply from Redis on the event channel")
                if ping_sent is None and now - last_seen > self.listener_ping_seconds:
                    await pubsub.ping()
                    ping_sent = now
                continue
            last_seen, ping_sent = now, None
            kind = message.get("type")
            if kind == "subscribe":
                # First subscription, or redis-py resubscribed after a silent reconnect.
                yield {"type": "resync"}
            elif kind == "message" and (event := decode_event(message["data"])) is not None:
                yield event

    def start_listener(self, callback: EventCallback) -> None:
        """Run ``callback`` (sync or async) for every event in a background task. Errors in the
        callback are logged and skipped: one bad event must not stop propagation."""
        if self._listener is not None and not self._listener.done():
            raise RuntimeError("the event listener is already running")
        self._listener = asyncio.create_task(self._listen(callback), name="redis-store-events")

    async def _listen(self, callback: EventCallback) -> None:
        async with contextlib.aclosing(self.subscribe_events()) as events:
            async for event in events:
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    _log.exception("redis_listener_callback_failed", event_type=event.get("type"))

    async def stop_listener(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
