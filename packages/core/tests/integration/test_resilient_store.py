"""ResilientStateStore: Redis going away (killed, hung) and coming back.

* The shared state store contract runs against the wrapper (over the memory store, and over a
  Redis store on a private server) to prove the delegation is faithful.
* A fake primary that refuses connections or hangs on demand pins down the mechanism:
  classification of errors, bounded calls, probing without hammering, last-writer-wins resync.
* A PRIVATE ``redis-server`` (its own port and temp dir, no persistence; the shared Redis on
  6379 is never touched) is SIGKILLed, SIGSTOPped and restarted under the wrapper.

Timing assertions are upper bounds with generous slack (the op timeout is 0.25 s, calls must
finish within 2 s); waiting for recovery polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    StateStore,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import KeyState
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.infrastructure.state_store.redis_scripts import ALL_SCRIPTS
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from apikeyrouter.infrastructure.state_store.resilient_store import (
    ResilientStateStore,
    StoreUnavailableError,
    is_store_error,
    is_unavailable_error,
)
from apikeyrouter.utils.exceptions import ApiKeyRouterError
from redis.asyncio import Redis

from tests.unit import test_memory_store as contract

T = TypeVar("T")

OP_TIMEOUT = 0.25
PROBE_EVERY = 0.2
CALL_BOUND = 2.0  # generous: op timeout plus scheduling slack on a busy machine
RECOVERY_DEADLINE = 15.0
T0 = contract.T0
RPM5 = WindowLimit("requests", 60.0, 5.0)

REDIS_SERVER = shutil.which("redis-server")
needs_redis_server = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server binary not installed"
)


# --- a private redis-server ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A redis-server of our own: SIGKILL it, SIGSTOP it, restart it on the same port."""

    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER is not None
        self.port = _free_port()
        self.directory = directory
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert REDIS_SERVER is not None
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        argv += ["--logfile", str(self.directory / "redis.log")]
        self._proc = subprocess.Popen(  # noqa: S603  (a fixed binary, our own arguments)
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self._proc

    def start(self, timeout: float = 10.0) -> None:
        proc = self._spawn()
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server did not start on port {self.port}")
            time.sleep(0.02)

    async def restart(self, timeout: float = 10.0) -> None:
        proc = self._spawn()
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(_answers_ping, self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server did not restart on port {self.port}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def pause(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server binary not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()  # SIGKILL also ends a stopped process


@pytest.fixture(scope="module")
def shared_private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server binary not installed")
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _prefix() -> str:
    return f"akr-resilient-{os.urandom(6).hex()}:"


# --- helpers -----------------------------------------------------------------------------------


async def timed(awaitable: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - started


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds. Returns the wait."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def rpm_request(key_id: str) -> ReservationRequest:
    return ReservationRequest(key_id, (RPM5,), {"requests": 1.0})


# --- the contract, through the wrapper --------------------------------------------------------


class TestResilientStoreContract(contract.TestStateStoreContract):
    @pytest.fixture(params=["over-memory", "over-private-redis"])
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
        primary: StateStore
        if request.param == "over-memory":
            primary = InMemoryStateStore()
        else:
            server: PrivateRedis = request.getfixturevalue("shared_private_redis")
            primary = RedisStateStore(server.url, prefix=_prefix())
        # A long op timeout: the contract is about faithful delegation, not about failover.
        wrapper = ResilientStateStore(primary, op_timeout_seconds=10.0)
        yield wrapper
        assert not wrapper.is_degraded
        assert wrapper.degraded_operations == 0
        await wrapper.close()


# --- the mechanism, with a primary that fails on demand -----------------------------------------


class FlakyStore(InMemoryStateStore):
    """An in-memory primary that refuses connections (``down``) or hangs (``hang``)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.hang = False
        self.error: BaseException | None = None
        self.pings = 0
        self.calls = 0

    async def gate(self) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()  # a server that never answers
        if self.error is not None:
            raise self.error
        if self.down:
            raise ConnectionRefusedError("connection refused")

    async def ping(self) -> bool:
        self.pings += 1
        return not (self.down or self.hang)


def _gated(name: str) -> Callable[..., Awaitable[Any]]:
    plain = getattr(InMemoryStateStore, name)

    async def method(self: FlakyStore, *args: Any, **kwargs: Any) -> Any:
        await self.gate()
        return await plain(self, *args, **kwargs)

    return method


for _name in sorted(StateStore.__abstractmethods__):  # every contract operation
    setattr(FlakyStore, _name, _gated(_name))


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[FlakyStore, ResilientStateStore, list[bool]]]:
    primary = FlakyStore()
    seen: list[bool] = []
    store = ResilientStateStore(
        primary,
        op_timeout_seconds=OP_TIMEOUT,
        retry_after_seconds=0.05,
        on_degraded=seen.append,
    )
    yield primary, store, seen
    await store.close()


def _redis_style(name: str, base: type[Exception] = Exception) -> type[Exception]:
    cls = type(name, (base,), {})
    cls.__module__ = "redis.exceptions"
    return cls


def test_errors_are_classified_by_kind_and_package_without_importing_clients() -> None:
    redis_connection = _redis_style("ConnectionError")
    busy_loading = _redis_style("BusyLoadingError", redis_connection)  # a subclass counts
    redis_timeout = _redis_style("TimeoutError")
    response = _redis_style("ResponseError")
    auto_reconnect = type("AutoReconnect", (Exception,), {"__module__": "pymongo.errors"})
    for exc in (
        ConnectionRefusedError(),
        OSError(),
        TimeoutError(),
        redis_connection(),
        busy_loading(),
        redis_timeout(),
        auto_reconnect(),
    ):
        assert is_unavailable_error(exc), exc
        assert is_store_error(exc), exc
    assert not is_unavailable_error(response())
    assert is_store_error(response())
    for exc in (ValueError(), KeyError(), RuntimeError("Connection")):
        assert not is_store_error(exc)


async def test_a_hung_primary_is_cut_off_at_the_op_timeout_then_left_alone(
    flaky: tuple[FlakyStore, ResilientStateStore, list[bool]],
) -> None:
    primary, store, seen = flaky
    await store.put_key(contract.make_key("k1"))
    primary.hang = True
    result, took = await timed(store.reserve([rpm_request("k1")], T0))
    assert isinstance(result, Reservation)
    assert OP_TIMEOUT * 0.9 <= took < CALL_BOUND
    assert store.is_degraded
    assert seen == [True]
    calls = primary.calls
    for _ in range(20):  # degraded: answered locally at once, the primary is not touched
        _, took = await timed(store.reserve([rpm_request("k1")], T0))
        assert took < CALL_BOUND
    assert primary.calls == calls
    assert store.degraded_operations == 21
    assert store.status()["degraded"] is True


async def test_probes_are_paced_not_per_request(
    flaky: tuple[FlakyStore, ResilientStateStore, list[bool]],
) -> None:
    primary, store, _ = flaky
    primary.down = True
    started = time.monotonic()
    while time.monotonic() - started < 0.5:
        await store.get_cooldown("k1", T0)
        await asyncio.sleep(0.001)
    elapsed = time.monotonic() - started
    assert store.degraded_operations > 50
    assert 1 <= primary.pings <= elapsed / 0.05 + 2


async def test_recovery_merges_states_by_last_writer_and_pushes_outage_changes(
    flaky: tuple[FlakyStore, ResilientStateStore, list[bool]],
) -> None:
    primary, store, seen = flaky
    for key_id in ("k1", "k2", "gone"):
        await store.put_key(contract.make_key(key_id))
    primary.down = True
    # Local changes during the outage, at T0 + 10.
    for key_id, target in (("k1", KeyState.THROTTLED), ("k2", KeyState.DISABLED)):
        move = contract.transition(key_id, KeyState.AVAILABLE, target, "outage", T0 + 10)
        assert await store.compare_and_set_state(key_id, KeyState.AVAILABLE, move, T0 + 40)
    await store.put_key(contract.make_key("new"))
    assert await store.delete_key("gone")
    await store.set_cooldown("k2", T0 + 99)
    assert isinstance(await store.reserve([rpm_request("k1")], T0), Reservation)
    # Meanwhile another replica moved k2 later (T0 + 20), straight on the primary.
    newer = contract.transition("k2", KeyState.AVAILABLE, KeyState.INVALID, "remote", T0 + 20)
    assert await InMemoryStateStore.compare_and_set_state(primary, "k2", KeyState.AVAILABLE, newer)
    assert seen == [True]

    primary.down = False
    await eventually(lambda: not store.is_degraded, RECOVERY_DEADLINE, "recovery")
    assert seen == [True, False]
    k1 = await InMemoryStateStore.get_key(primary, "k1")
    k2 = await InMemoryStateStore.get_key(primary, "k2")
    assert k1 is not None
    assert (k1.state, k1.state_changed_at, k1.cooldown_until) == (
        KeyState.THROTTLED,
        T0 + 10,
        T0 + 40,
    )
    assert k2 is not None
    assert (k2.state, k2.state_reason) == (KeyState.INVALID, "remote")  # the later change won
    assert await InMemoryStateStore.get_key(primary, "new") is not None
    assert await InMemoryStateStore.get_key(primary, "gone") is None
    assert await InMemoryStateStore.get_cooldown(primary, "k2", T0) == T0 + 99
    assert await contract.used(primary, "k1", RPM5, T0) == 1.0  # the outage usage, replayed
    audit = await InMemoryStateStore.list_audit(primary, "k1")
    assert [(t.to_state, t.actor) for t in audit] == [
        (KeyState.THROTTLED, "router"),  # the original transition
        (KeyState.THROTTLED, "resync"),  # and its application to the shared store
    ]
    assert store.status()["pending_resync"] == 0


async def test_store_errors_that_are_not_outages_are_503_and_other_errors_pass_through(
    flaky: tuple[FlakyStore, ResilientStateStore, list[bool]],
) -> None:
    primary, store, seen = flaky
    primary.error = _redis_style("ResponseError")("OOM command not allowed")
    with pytest.raises(StoreUnavailableError) as info:
        await store.reserve([rpm_request("k1")], T0)
    assert info.value.status == 503
    assert "OOM" not in info.value.message  # only the type name, never the server's text
    assert not store.is_degraded  # the store answered: no outage
    primary.error = ValueError("a bug, not store trouble")
    with pytest.raises(ValueError, match="a bug"):
        await store.get_key("k1")
    assert seen == []


async def test_a_failing_listener_does_not_break_the_store() -> None:
    primary = FlakyStore()

    def broken(_degraded: bool) -> None:
        raise RuntimeError("listener bug")

    store = ResilientStateStore(primary, retry_after_seconds=0.05, on_degraded=broken)
    try:
        primary.down = True
        assert await store.get_key("k1") is None
        primary.down = False
        await eventually(lambda: not store.is_degraded, RECOVERY_DEADLINE, "recovery")
    finally:
        await store.close()


async def test_closed_mode_records_bookkeeping_and_refuses_new_work() -> None:
    primary = FlakyStore()
    store = ResilientStateStore(primary, mode="closed", retry_after_seconds=0.05)
    try:
        await store.put_key(contract.make_key("k1"))
        held = await store.reserve([rpm_request("k1")], T0)
        assert isinstance(held, Reservation)
        primary.down = True
        with pytest.raises(StoreUnavailableError):
            await store.reserve([rpm_request("k1")], T0)
        # The request already admitted finishes: its usage is recorded, then replayed.
        await store.commit(held, {"requests": 3.0})
        await store.record_failure("k1", T0, CircuitPolicy())
        primary.down = False
        await eventually(lambda: not store.is_degraded, RECOVERY_DEADLINE, "recovery")
        assert await contract.used(primary, "k1", RPM5, T0) == 3.0
    finally:
        await store.close()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        ResilientStateStore(InMemoryStateStore(), mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        ResilientStateStore(InMemoryStateStore(), op_timeout_seconds=0)


# --- a real redis-server, killed, hung and restarted --------------------------------------------


@contextlib.asynccontextmanager
async def resilient_redis(
    server: PrivateRedis, prefix: str, **options: Any
) -> AsyncIterator[tuple[ResilientStateStore, RedisStateStore, list[bool]]]:
    """The wrapper under test, plus a plain store on the same prefix: another replica's view."""
    seen: list[bool] = []
    store = ResilientStateStore(
        RedisStateStore(server.url, prefix=prefix),
        op_timeout_seconds=OP_TIMEOUT,
        retry_after_seconds=PROBE_EVERY,
        on_degraded=seen.append,
        **options,
    )
    other = RedisStateStore(server.url, prefix=prefix)
    try:
        yield store, other, seen
    finally:
        await store.close()
        await other.close()


@needs_redis_server
async def test_open_mode_keeps_serving_through_a_kill_and_restores_the_restarted_redis(
    private_redis: PrivateRedis,
) -> None:
    now = time.time()
    async with resilient_redis(private_redis, _prefix(), mode="open") as (store, other, seen):
        for key_id in ("k1", "k2"):
            await store.put_key(contract.make_key(key_id))
        for _ in range(2):
            assert isinstance(await store.reserve([rpm_request("k1")], now), Reservation)
        assert store.status()["degraded"] is False

        private_redis.kill()
        results: list[Reservation | ReservationRefusal] = []
        for _ in range(5):
            result, took = await timed(store.reserve([rpm_request("k1")], now))
            assert took < CALL_BOUND
            results.append(result)
        assert store.is_degraded
        assert seen == [True]
        # The local mirror knew the 2 reservations made before the kill: 3 more fit, not 5.
        assert [isinstance(r, Reservation) for r in results] == [True, True, True, False, False]
        first, _, third = (r for r in results[:3] if isinstance(r, Reservation))
        _, took = await timed(store.commit(first, {"requests": 1.0}))
        assert took < CALL_BOUND
        _, took = await timed(store.release(third))
        assert took < CALL_BOUND
        revoke = contract.transition("k2", KeyState.AVAILABLE, KeyState.INVALID, "401", now)
        changed, took = await timed(store.compare_and_set_state("k2", KeyState.AVAILABLE, revoke))
        assert changed is True
        assert took < CALL_BOUND
        local_k2 = await store.get_key("k2")
        assert local_k2 is not None
        assert local_k2.state is KeyState.INVALID
        assert store.degraded_operations >= 9

        await private_redis.restart()
        waited = await eventually(lambda: not store.is_degraded, RECOVERY_DEADLINE, "recovery")
        assert waited < RECOVERY_DEADLINE
        assert seen == [True, False]
        # The new server started empty (no persistence): the keys came back, with the state
        # changed during the outage, its audit record, and the usage taken meanwhile.
        k2 = await other.get_key("k2")
        assert k2 is not None
        assert (k2.state, k2.state_reason) == (KeyState.INVALID, "401")
        assert await other.get_key("k1") is not None
        assert revoke in await other.list_audit("k2")
        assert await contract.used(other, "k1", RPM5, now) == 2.0  # 3 taken, 1 given back
        # Back on Redis: a reservation now lands there.
        assert isinstance(await store.reserve([rpm_request("k1")], now), Reservation)
        assert await contract.used(other, "k1", RPM5, now) == 3.0


@needs_redis_server
async def test_a_hung_redis_never_holds_a_call_past_the_timeout_and_state_merges_back(
    private_redis: PrivateRedis,
) -> None:
    now = time.time()
    async with resilient_redis(private_redis, _prefix(), mode="open") as (store, other, seen):
        for key_id in ("k1", "k2"):
            await store.put_key(contract.make_key(key_id))
        private_redis.pause()
        try:
            throttle = contract.transition(
                "k1", KeyState.AVAILABLE, KeyState.THROTTLED, "429", now + 1
            )
            calls: list[Awaitable[Any]] = [
                store.get_key("k1"),
                store.compare_and_set_state("k1", KeyState.AVAILABLE, throttle, now + 30),
                store.reserve([rpm_request("k2")], now),
                store.set_cooldown("k2", now + 20),
                store.record_failure("k2", now, CircuitPolicy()),
                store.window_usage("k2", [RPM5], now),
                store.list_keys(),
            ]
            for call in calls:
                _, took = await timed(call)
                assert took < CALL_BOUND
            assert store.is_degraded
        finally:
            private_redis.resume()
        await eventually(lambda: not store.is_degraded, RECOVERY_DEADLINE, "recovery")
        assert seen == [True, False]
        k1 = await other.get_key("k1")
        assert k1 is not None
        assert (k1.state, k1.cooldown_until) == (KeyState.THROTTLED, now + 30)
        assert await other.get_cooldown("k2", now) == now + 20


@needs_redis_server
async def test_closed_mode_answers_503_quickly_and_recovers_on_restart(
    private_redis: PrivateRedis,
) -> None:
    now = time.time()
    async with resilient_redis(private_redis, _prefix(), mode="closed") as (store, _, seen):
        await store.put_key(contract.make_key("k1"))
        held = await store.reserve([rpm_request("k1")], now)
        assert isinstance(held, Reservation)

        private_redis.kill()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as info:
                await store.reserve([rpm_request("k1")], now)
            assert time.monotonic() - started < CALL_BOUND
        error = info.value
        assert isinstance(error, ApiKeyRouterError)
        assert (error.status, error.error_type, error.code) == (
            503,
            "service_unavailable",
            "store_unavailable",
        )
        assert error.retry_after == PROBE_EVERY
        assert error.to_openai_error()["error"]["code"] == "store_unavailable"
        with pytest.raises(StoreUnavailableError):
            await store.get_key("k1")
        # Bookkeeping for the request admitted before the outage never fails it.
        _, took = await timed(store.commit(held, {"requests": 1.0}))
        assert took < CALL_BOUND
        assert store.is_degraded
        assert seen == [True]

        await private_redis.restart()
        await eventually(lambda: not store.is_degraded, RECOVERY_DEADLINE, "recovery")
        assert seen == [True, False]
        # The recovery probe loaded every script into the new server before any request ran.
        admin: Redis = Redis.from_url(private_redis.url)
        try:
            assert await admin.script_exists(*(s.sha for s in ALL_SCRIPTS)) == [True] * len(
                ALL_SCRIPTS
            )
        finally:
            await admin.aclose()
        assert await store.get_key("k1") is not None  # restored: the restart lost everything
        assert isinstance(await store.reserve([rpm_request("k1")], now), Reservation)


@needs_redis_server
async def test_a_replica_rejoins_after_a_redis_restart_and_hears_the_others_again(
    private_redis: PrivateRedis,
) -> None:
    from apikeyrouter import ApiKeyRouter, OpenAIAdapter
    from apikeyrouter.orchestration.sync import StoreEventSync
    from apikeyrouter.utils.encryption import generate_master_key

    prefix = _prefix()
    store = ResilientStateStore(
        RedisStateStore(private_redis.url, prefix=prefix),
        op_timeout_seconds=OP_TIMEOUT,
        retry_after_seconds=PROBE_EVERY,
    )
    router = ApiKeyRouter(store, master_key=generate_master_key())
    other = RedisStateStore(private_redis.url, prefix=prefix)  # another replica
    sync = StoreEventSync(router._ctx)
    try:
        await router.register_provider("openai", OpenAIAdapter("http://127.0.0.1:9/v1"))
        key = await router.register_key("sk-test-rejoin000001", "openai")
        assert await sync.start(ready_timeout=5.0)
        reloads = sync.reloads

        private_redis.kill()
        # An operator disables the key during the outage: accepted locally (fail-open).
        _, took = await timed(router.keys.set_state(key.id, KeyState.DISABLED, "operator"))
        assert took < CALL_BOUND
        assert store.is_degraded

        await private_redis.restart()
        await eventually(lambda: not store.is_degraded, RECOVERY_DEADLINE, "recovery")
        shared = await other.get_key(key.id)  # restored into the empty server, as changed
        assert shared is not None
        assert shared.state is KeyState.DISABLED
        await eventually(lambda: sync.reloads > reloads, RECOVERY_DEADLINE, "reload")

        # The event stream reconnected: another replica's change reaches this one again.
        enable = contract.transition(
            key.id, KeyState.DISABLED, KeyState.AVAILABLE, "re-enabled", time.time()
        )
        assert await other.compare_and_set_state(key.id, KeyState.DISABLED, enable)
        await eventually(
            lambda: key.state is KeyState.AVAILABLE, RECOVERY_DEADLINE, "event after restart"
        )
    finally:
        await sync.stop()
        await router.close()
        await other.close()
