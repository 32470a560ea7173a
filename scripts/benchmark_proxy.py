"""Load the proxy, a bare forwarder and the simulated provider side by side; print the ratios.

Run: ``./scripts/benchmark.sh`` (or ``uv run python scripts/benchmark_proxy.py``). It starts
three processes on 127.0.0.1 (the simulator from its CLI, the proxy from its CLI with one
worker, and a bare forwarder: a few lines of raw ASGI under uvicorn that pass the body to the
simulator through one shared aiohttp session), then drives each with the same async client at
a fixed concurrency for a fixed time. Absolute numbers drift on a shared machine; the ratios
measured in the same run are what to compare. Every process it starts is stopped at the end.

``--store memory redis`` runs one proxy per state store side by side (the Redis one on
``--redis-url``, default the local server, under a key prefix of its own that is deleted at the
end, never a flush), then counts what one request costs Redis over a fixed number of
sequential requests, two ways and without MONITOR:

* round trips and commands sent: a third proxy (same config, its own prefix) reaches Redis
  through a small TCP relay in this process that counts round trips (a client sending after
  the server last answered it) and the commands in them (RESP arrays), by command and, for
  EVALSHA, by script name; once one request at a time, once over 8 connections, where
  requests finishing together share one write-behind batch;
* commands Redis executed, the ones inside Lua scripts included: ``INFO commandstats``
  deltas on the real server, less the deltas over an idle interval as long right after
  (other clients of a shared server), ``INFO`` itself excluded.

``benchmark_proxy.py forwarder --upstream URL --port N`` runs the bare forwarder itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp

SIM_KEYS = [f"sk-bench-{n:04d}-xxxxxxxxxxxxxxxx" for n in range(4)]
BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":'
    b'"Benchmark request, please answer briefly."}],"max_tokens":16}'
)
PATH = "/v1/chat/completions"
REDIS_TARGET = "proxy (redis)"
#: ``serve --config`` of the proxy's CLI; the config path and port follow.
PROXY_ARGV = [sys.executable, "-m", "apikeyrouter_proxy.cli", "serve", "--config"]
STARTUP_SECONDS = 30.0


# --- the bare forwarder ----------------------------------------------------------------------
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def forwarder_app(
    upstream_root: str, secret: str
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Raw ASGI: read the body, POST it upstream with one shared session, return the answer."""
    session: aiohttp.ClientSession | None = None
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            status, payload = 200, b"ok"
        else:
            assert session is not None
            async with session.post(upstream_root + scope["path"], data=body, headers=headers) as r:
                status, payload = r.status, await r.read()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def run_forwarder(upstream: str, port: int) -> None:
    import uvicorn

    root = upstream.removesuffix("/v1")
    uvicorn.run(
        forwarder_app(root, SIM_KEYS[0]),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # as the proxy's CLI runs uvicorn
        server_header=False,
    )


def run_proxy_bypassing_router(config_path: str, port: int) -> None:
    """Diagnostic only: the proxy with ``router.route`` replaced by one direct adapter call on a
    fixed key, so the run separates the proxy layer's cost from the routing library's."""
    import uvicorn
    from apikeyrouter import RouterResponse, RoutingDecision
    from apikeyrouter.domain.interfaces.provider_adapter import UpstreamSuccess
    from apikeyrouter.domain.models.response import AttemptRecord
    from apikeyrouter.infrastructure.observability.logger import configure_logging
    from apikeyrouter_proxy.config import load_config
    from apikeyrouter_proxy.main import create_app

    configure_logging("INFO")
    app = create_app(load_config(config_path), manage_log_level=True)
    runtime = app.runtime
    real_router = runtime.service.router

    async def route(intent: Any, objective: Any = None, **_: Any) -> RouterResponse:
        key = real_router.keys.list_keys()[0]
        adapter = runtime.service.providers()[key.provider_id].adapter
        result = await adapter.send(intent, real_router.keys.secret(key), 10.0)
        assert isinstance(result, UpstreamSuccess)
        attempt = AttemptRecord(key_id=key.id, provider_id=key.provider_id, outcome="success")
        # Plain constructors: model_construct() with a default_factory field left out makes
        # pydantic inspect the factory's signature on every call (ast.parse for builtins).
        decision = RoutingDecision(
            request_id=intent.request_id,
            objective=real_router.engine.default_objective,
            model=intent.model,
            chosen_key_id=key.id,
        )
        return RouterResponse(
            body=result.body,
            key_used=key.id,
            provider_id=key.provider_id,
            model=intent.model,
            decision=decision,
            attempts=[attempt],
        )

    setattr(real_router, "route", route)  # noqa: B010 - a diagnostic stand-in, on purpose
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )


# --- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    url: str


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def started(
    name: str, argv: list[str], url: str, log: IO[bytes], env: dict[str, str] | None = None
) -> Iterator[Service]:
    process = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    try:
        yield Service(name, process, url)
    finally:
        _stop(process)


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    """Poll until the service answers (or it dies, or the startup deadline passes)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: process exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {STARTUP_SECONDS:g}s")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


# --- load ------------------------------------------------------------------------------------
@dataclass
class Result:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: float | None = None  # CPU the target process used while measured
    slice_rps: list[float] = field(default_factory=list)  # req/s of each interleaved slice

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds / self.requests * 1e6

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def load(url: str, concurrency: int, seconds: float, warmup: float) -> Result:
    """``concurrency`` workers, each sending the next request as soon as the last one ended."""
    headers = {"Authorization": f"Bearer {SIM_KEYS[0]}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    result = Result("", concurrency, 0, 0, seconds, [])
    async with aiohttp.ClientSession(connector=connector) as session:
        measure_from = time.perf_counter() + warmup
        stop_at = measure_from + seconds

        async def worker() -> None:
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                ended = time.perf_counter()
                if began >= measure_from and ended <= stop_at:
                    if ok:
                        result.requests += 1
                        result.latencies_ms.append((ended - began) * 1000.0)
                    else:
                        result.errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


async def measure(
    targets: list[tuple[str, str, int]],
    concurrencies: list[int],
    seconds: float,
    warmup: float,
    rounds: int,
) -> list[Result]:
    """Each target gets ``seconds`` per concurrency, split into ``rounds`` slices taken in
    turn, so a burst of unrelated load on the machine hits all targets alike."""
    results = []
    for concurrency in concurrencies:
        totals = {name: Result(name, concurrency, 0, 0, 0.0, [], 0.0) for name, _, _ in targets}
        for _ in range(rounds):
            for name, url, pid in targets:
                cpu_before = cpu_seconds(pid)
                part = await load(url, concurrency, seconds / rounds, warmup)
                cpu_after = cpu_seconds(pid)
                total = totals[name]
                total.slice_rps.append(part.rps)
                total.requests += part.requests
                total.errors += part.errors
                total.seconds += part.seconds
                total.latencies_ms.extend(part.latencies_ms)
                if cpu_before is None or cpu_after is None or total.cpu_seconds is None:
                    total.cpu_seconds = None
                else:  # warm-up requests used CPU too: scale to the measured share
                    share = part.seconds / (part.seconds + warmup)
                    total.cpu_seconds += (cpu_after - cpu_before) * share
        for name, _, _ in targets:
            result = totals[name]
            results.append(result)
            cpu = result.cpu_us_per_request
            print(
                f"  {name:<18} c={concurrency:<2} {result.rps:9.0f} req/s   "
                f"p50 {result.pct(0.5):7.3f} ms   p99 {result.pct(0.99):7.3f} ms"
                + (f"   cpu {cpu:6.0f} us/req" if cpu is not None else "")
                + (f"   errors {result.errors}" if result.errors else ""),
                flush=True,
            )
    return results


def proxy_config(sim_url: str, port: int, store: str = "", prefix: str = "") -> str:
    keys = "\n".join(f"      - id: bench-{n}\n        key: {k}" for n, k in enumerate(SIM_KEYS))
    text = (
        f"server:\n  port: {port}\n"
        f"providers:\n  - id: sim\n    kind: openai\n    base_url: {sim_url}\n    keys:\n{keys}\n"
    )
    if store:
        text += f"store:\n  kind: redis\n  redis:\n    url: {store}\n    prefix: '{prefix}'\n"
    return text


# --- Redis: its own prefix, and the commands a request costs ---------------------------------
COUNT_REQUESTS = 500
#: Connections of the second count, where requests finishing together share a batch.
CONCURRENT_COUNT = 8


def redis_command_counts(client: Any) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``), INFO excluded."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


def delete_prefix(url: str, prefix: str) -> int:
    """Remove the benchmark's keys (SCAN + DEL under its own prefix; never FLUSHDB)."""
    from apikeyrouter.infrastructure.state_store.redis_codec import glob_escape
    from redis import Redis

    client: Redis = Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=glob_escape(prefix) + "*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


class CommandCounter:
    """A TCP relay to Redis that counts the commands its clients send (MONITOR-free).

    Bytes are forwarded untouched both ways; a copy of the client-to-server stream is parsed as
    RESP (arrays of bulk strings, as every client library sends) to count whole commands.
    Round trips are counted apart from commands, since a pipeline sends several commands in
    one: a round trip starts whenever a client sends after the server last answered it.
    """

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self.commands: Counter[str] = Counter()
        self.round_trips = 0
        self.scripts: dict[str, str] = {}  # sha -> script name, for EVALSHA breakdowns
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        answered = [True]  # shared by the two directions of this connection
        tasks = [
            asyncio.ensure_future(self._pump(reader, up_writer, answered, count=True)),
            asyncio.ensure_future(self._pump(up_reader, writer, answered, count=False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for stream in (writer, up_writer):
                stream.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answered: list[bool],
        *,
        count: bool,
    ) -> None:
        pending = b""
        while data := await reader.read(65536):
            if count and answered[0]:
                self.round_trips += 1
            answered[0] = not count
            writer.write(data)
            await writer.drain()
            if count:
                pending = self._count(pending + data)

    def _count(self, buf: bytes) -> bytes:
        """Count every complete command in ``buf``; return the incomplete rest."""
        while buf:
            end = buf.find(b"\r\n")
            if end < 0:
                return buf
            if not buf.startswith(b"*"):  # an inline command: one line
                self.commands[buf[:end].split(b" ", 1)[0].decode().upper()] += 1
                buf = buf[end + 2 :]
                continue
            items, pos = int(buf[1:end]), end + 2
            parts: list[bytes] = []
            for _ in range(items):
                head = buf.find(b"\r\n", pos)
                if head < 0:
                    return buf
                size = int(buf[pos + 1 : head])
                if len(buf) < head + 2 + size + 2:
                    return buf
                if len(parts) < 2:
                    parts.append(buf[head + 2 : head + 2 + size])
                pos = head + 2 + size + 2
            name = parts[0].decode().upper() if parts else "?"
            if name == "EVALSHA" and len(parts) > 1:
                sha = parts[1].decode()
                name = f"EVALSHA {self.scripts.get(sha, sha[:8])}"
            self.commands[name] += 1
            buf = buf[pos:]
        return buf


def script_names() -> dict[str, str]:
    """The store's Lua scripts by SHA1, to name the EVALSHA calls."""
    from apikeyrouter.infrastructure.state_store import redis_scripts

    return {
        value.sha: name
        for name, value in vars(redis_scripts).items()
        if isinstance(value, redis_scripts.LuaScript)
    }


async def concurrently(
    url: str, requests: int, session: aiohttp.ClientSession, concurrency: int
) -> int:
    """``requests`` requests over ``concurrency`` workers; returns how many failed."""
    share, extra = divmod(requests, concurrency)
    counts = [share + (n < extra) for n in range(concurrency)]
    return sum(await asyncio.gather(*(sequential(url, n, session) for n in counts)))


async def sequential(url: str, requests: int, session: aiohttp.ClientSession) -> int:
    """``requests`` requests one after the other; returns how many failed."""
    headers = {"Authorization": f"Bearer {SIM_KEYS[0]}", "Content-Type": "application/json"}
    failed = 0
    for _ in range(requests):
        async with session.post(url, data=BODY, headers=headers) as response:
            await response.read()
            failed += response.status != 200
    return failed


async def count_redis_commands(
    url: str, counted_url: str, counter: CommandCounter, redis_url: str, requests: int
) -> None:
    """Round trips through the relay (``counted_url`` is a proxy behind it), and commands
    executed per ``INFO commandstats`` (``url`` is the measured Redis-store proxy)."""
    from redis import Redis

    admin: Redis = Redis.from_url(redis_url)  # one connection: its handshake is not counted
    try:
        async with aiohttp.ClientSession() as session:
            await sequential(counted_url, 20, session)  # warm: connections open, scripts loaded
            relayed_before = Counter(counter.commands)
            trips_before = counter.round_trips
            failed = await sequential(counted_url, requests, session)
            relayed = counter.commands - relayed_before
            trips = counter.round_trips - trips_before
            trips_before = counter.round_trips
            failed += await concurrently(counted_url, requests, session, CONCURRENT_COUNT)
            await asyncio.sleep(0.5)  # the last batch written behind the answers
            concurrent_trips = counter.round_trips - trips_before
            await sequential(url, 20, session)
            before = redis_command_counts(admin)
            began = time.perf_counter()
            failed += await sequential(url, requests, session)
            busy = time.perf_counter() - began
            after = redis_command_counts(admin)
            await asyncio.sleep(busy)  # an idle interval as long, for the baseline
            idle = redis_command_counts(admin)
        clients = int(admin.info("clients")["connected_clients"])
    finally:
        admin.close()
    print(
        f"\nRedis cost per request ({requests} sequential requests per count, {failed} failed)",
        flush=True,
    )
    print(
        f"  round trips: {trips / requests:.2f} one request at a time (1 on the request path:"
        f" the reservation; the commit and the decision follow in one pipelined batch),"
        f" {concurrent_trips / requests:.2f} at {CONCURRENT_COUNT} connections (batches shared)"
    )
    print(f"  commands the proxy sent: {sum(relayed.values()) / requests:.2f}")
    for name, calls in sorted(relayed.items(), key=lambda item: -item[1]):
        print(f"    {name:<28} {calls / requests:6.2f}")
    work, noise = _delta(after, before), _delta(idle, after)
    executed = sum(work.values()) - sum(noise.values())
    print(f"  commands Redis executed, inside scripts included: {executed / requests:.2f}")
    for name, calls in sorted(work.items(), key=lambda item: -item[1]):
        print(f"    {name:<28} {calls / requests:6.2f}")
    print(
        f"    baseline subtracted: {sum(noise.values())} commands over an idle interval as long"
        f" ({clients} clients connected to the server)",
        flush=True,
    )


async def run(args: argparse.Namespace, script: str, workdir: Path) -> int:
    python = sys.executable
    sim_port, proxy_port, fwd_port = free_port(), free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}/v1"
    config = workdir / "proxy.yaml"
    config.write_bytes(proxy_config(sim_url, proxy_port).encode())
    redis_port = free_port()
    redis_prefix = f"akr-bench-{uuid.uuid4().hex[:12]}:"
    redis_config = workdir / "proxy-redis.yaml"
    redis_config.write_bytes(
        proxy_config(sim_url, redis_port, args.redis_url, redis_prefix).encode()
    )
    log_path = workdir / "processes.log"
    sim_argv = [
        python,
        "-m",
        "apikeyrouter.testing",
        "--port",
        str(sim_port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    for key in SIM_KEYS:
        sim_argv += ["--key", key]
    proxy_argv = [
        python,
        "-m",
        "apikeyrouter_proxy.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(proxy_port),
        "--workers",
        "1",
    ]
    fwd_argv = [python, script, "forwarder", "--upstream", sim_url, "--port", str(fwd_port)]
    bypass_port = free_port()
    bypass_argv = [
        python,
        script,
        "proxy-bypass",
        "--config",
        str(config),
        "--port",
        str(bypass_port),
    ]
    env_note = (
        f"{args.duration:g}s per target and concurrency in {args.rounds} interleaved slices "
        f"(+{args.warmup:g}s warm-up each), 127.0.0.1"
    )
    print(f"proxy benchmark: {env_note}; logs in {log_path}", flush=True)
    stores: list[str] = list(dict.fromkeys(args.store))
    proxy_env = dict(os.environ)
    redis_argv = [*PROXY_ARGV, str(redis_config), "--port", str(redis_port), "--workers", "1"]
    if "redis" in stores:
        from apikeyrouter.utils.encryption import MASTER_KEY_ENV, generate_master_key

        proxy_env[MASTER_KEY_ENV] = generate_master_key()  # a throwaway key for a throwaway run
        print(f"Redis store: {args.redis_url}, prefix {redis_prefix!r} (deleted at the end)")
    try:
        with (
            log_path.open("wb") as log,
            started("simulator", sim_argv, f"http://127.0.0.1:{sim_port}", log) as sim,
        ):
            await wait_ready(sim.url + "/v1/models", sim.process)
            with contextlib.ExitStack() as stack:
                proxies: list[Service] = []
                if "memory" in stores:
                    url = f"http://127.0.0.1:{proxy_port}"
                    proxies.append(
                        stack.enter_context(started("proxy", proxy_argv, url, log, proxy_env))
                    )
                if "redis" in stores:
                    url = f"http://127.0.0.1:{redis_port}"
                    proxies.append(
                        stack.enter_context(started(REDIS_TARGET, redis_argv, url, log, proxy_env))
                    )
                fwd = stack.enter_context(
                    started("forwarder", fwd_argv, f"http://127.0.0.1:{fwd_port}", log)
                )
                for proxy in proxies:
                    await wait_ready(proxy.url + "/health/ready", proxy.process)
                await wait_ready(fwd.url + "/", fwd.process)
                targets = [
                    ("simulator direct", sim.url + PATH, sim.process.pid),
                    ("bare forwarder", fwd.url + PATH, fwd.process.pid),
                ]
                targets += [(p.name, p.url + PATH, p.process.pid) for p in proxies]
                if args.with_bypass:
                    bypass = stack.enter_context(
                        started("bypass", bypass_argv, f"http://127.0.0.1:{bypass_port}", log)
                    )
                    await wait_ready(bypass.url + "/health/live", bypass.process)
                    targets.append(("proxy, no routing", bypass.url + PATH, bypass.process.pid))
                results = await measure(
                    targets, args.concurrency, args.duration, args.warmup, args.rounds
                )
                for proxy in proxies:
                    if proxy.name == REDIS_TARGET:
                        await count_with_relay(args, sim_url, workdir, proxy, log, proxy_env)
                proxy_rss = rss_mb(proxies[0].process.pid) if proxies else None
                fwd_rss = rss_mb(fwd.process.pid)
    finally:
        if "redis" in stores:
            removed = delete_prefix(args.redis_url, redis_prefix)
            print(f"  removed {removed} Redis keys under {redis_prefix!r}")
    summarize(results, proxy_rss, fwd_rss)
    return 0


async def count_with_relay(
    args: argparse.Namespace,
    sim_url: str,
    workdir: Path,
    proxy: Service,
    log: IO[bytes],
    env: dict[str, str],
) -> None:
    """Start a proxy behind the counting relay (own prefix, removed after) and count."""
    target = urlsplit(args.redis_url)
    if target.scheme != "redis":
        print("\n(round trips are counted for redis:// URLs only)")
        return
    counter = CommandCounter(target.hostname or "127.0.0.1", target.port or 6379)
    counter.scripts = script_names()
    relay_port = await counter.start()
    prefix = f"akr-bench-{uuid.uuid4().hex[:12]}:"
    port = free_port()
    relayed = f"redis://127.0.0.1:{relay_port}{target.path or '/0'}"
    config = workdir / "proxy-counted.yaml"
    config.write_bytes(proxy_config(sim_url, port, relayed, prefix).encode())
    argv = [*PROXY_ARGV, str(config), "--port", str(port), "--workers", "1"]
    try:
        with started("proxy (counted)", argv, f"http://127.0.0.1:{port}", log, env) as counted:
            await wait_ready(counted.url + "/health/ready", counted.process)
            await count_redis_commands(
                proxy.url + PATH, counted.url + PATH, counter, args.redis_url, COUNT_REQUESTS
            )
    finally:
        await counter.close()
        delete_prefix(args.redis_url, prefix)


def summarize(results: list[Result], proxy_rss: float | None, fwd_rss: float | None) -> None:
    def find(target: str, concurrency: int) -> Result | None:
        return next(
            (r for r in results if r.target == target and r.concurrency == concurrency), None
        )

    print("\nsummary")
    for concurrency in sorted({r.concurrency for r in results}, reverse=True):
        proxy, fwd, direct = (
            find("proxy", concurrency),
            find("bare forwarder", concurrency),
            find("simulator direct", concurrency),
        )
        if proxy and fwd and fwd.rps:
            print(
                f"  c={concurrency}: proxy throughput = {proxy.rps / fwd.rps:.2f} x bare forwarder"
                f" ({proxy.rps:.0f} vs {fwd.rps:.0f} req/s)"
            )
            # Slices taken back to back are paired measurements: their ratios cancel most of
            # the machine's drift, which the totals above still carry.
            paired = [p / f for p, f in zip(proxy.slice_rps, fwd.slice_rps, strict=True) if f]
            if len(paired) > 1:
                print(
                    f"  c={concurrency}: per-slice ratios {' '.join(f'{r:.2f}' for r in paired)}"
                    f" (median {statistics.median(paired):.2f})"
                )
        if proxy and direct:
            added = proxy.pct(0.5) - direct.pct(0.5)
            print(f"  c={concurrency}: proxy adds {added:.3f} ms at p50 over calling the simulator")
        if fwd and direct:
            added = fwd.pct(0.5) - direct.pct(0.5)
            print(f"  c={concurrency}: bare forwarder adds {added:.3f} ms at p50")
        redis = find(REDIS_TARGET, concurrency)
        if proxy and redis and proxy.rps:
            print(
                f"  c={concurrency}: Redis store vs memory: {redis.rps:.0f} vs {proxy.rps:.0f} "
                f"req/s ({redis.rps / proxy.rps:.2f} x), p50 {redis.pct(0.5):.3f} vs "
                f"{proxy.pct(0.5):.3f} ms (+{redis.pct(0.5) - proxy.pct(0.5):.3f} ms per "
                f"request), p99 {redis.pct(0.99):.3f} vs {proxy.pct(0.99):.3f} ms"
            )
        if redis and direct:
            added = redis.pct(0.5) - direct.pct(0.5)
            print(f"  c={concurrency}: Redis-store proxy adds {added:.3f} ms at p50")
        bypass = find("proxy, no routing", concurrency)
        if bypass and fwd and fwd.rps:
            print(
                f"  c={concurrency}: proxy with routing bypassed = {bypass.rps / fwd.rps:.2f} x "
                "bare forwarder (the proxy layer's own cost; the rest is the routing library)"
            )
    if proxy_rss is not None:
        print(f"  proxy resident memory after the runs: {proxy_rss:.1f} MB")
    if fwd_rss is not None:
        print(f"  bare forwarder resident memory: {fwd_rss:.1f} MB")
    medians = [statistics.median(r.latencies_ms) for r in results if r.latencies_ms]
    if not medians:
        print("  no successful requests were measured")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    fwd = sub.add_parser("forwarder", help="run the bare forwarder (used by the benchmark)")
    fwd.add_argument("--upstream", required=True)
    fwd.add_argument("--port", type=int, required=True)
    bypass = sub.add_parser("proxy-bypass", help="the proxy minus routing (diagnostic target)")
    bypass.add_argument("--config", required=True)
    bypass.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per slice")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved slices per run")
    parser.add_argument(
        "--store",
        nargs="+",
        choices=("memory", "redis"),
        default=["memory"],
        help="the proxy's state store(s); several run side by side (default: memory)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="Redis for --store redis (the benchmark uses a prefix of its own, removed after)",
    )
    parser.add_argument(
        "--with-bypass",
        action="store_true",
        help="also load the proxy with routing replaced by a direct upstream call (diagnostic)",
    )
    args = parser.parse_args(argv)
    if args.command == "forwarder":
        run_forwarder(args.upstream, args.port)
        return 0
    if args.command == "proxy-bypass":
        run_proxy_bypassing_router(args.config, args.port)
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    workdir = Path(tempfile.mkdtemp(prefix="akr-bench-"))
    return asyncio.run(run(args, str(Path(__file__).resolve()), workdir))


if __name__ == "__main__":
    sys.exit(main())
