"""Benchmark candidate upstream HTTP clients for apikeyrouter's hot path.

Compares, against a tiny local upstream (uvicorn + raw ASGI app, in a separate process):

* ``aiohttp``        - one shared ``aiohttp.ClientSession`` with a keep-alive ``TCPConnector``
* ``httpx``          - one shared ``httpx.AsyncClient`` (default httpcore transport)
* ``httpx+aiohttp``  - ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``

For every client and concurrency level, N worker coroutines POST a ~500-byte JSON body in a
closed loop (warm-up first, then a fixed measurement window), reading the full response body.
Reported: requests/s, p50/p99 latency, ratio to the best client at the same concurrency, client
CPU time per request and the upstream server's CPU usage (to spot a saturated server).

Run::

    uv run python packages/core/tests/benchmarks/bench_http_client.py [--seconds 5] \
        [--concurrency 8 32]

All traffic goes to 127.0.0.1 on an ephemeral port. The script always exits 0 on completion.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import socket
import sys
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Final

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

HOST: Final = "127.0.0.1"
PATH: Final = "/v1/chat/completions"
REQUEST_TIMEOUT_S: Final = 10.0
SERVER_START_TIMEOUT_S: Final = 20.0
READY_POLL_INTERVAL_S: Final = 0.02
# Extra slack on top of warm-up + measurement before a run is forcibly cancelled.
RUN_GRACE_S: Final = REQUEST_TIMEOUT_S + 5.0

# ---------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------

RESPONSE_BODY: Final[bytes] = orjson.dumps(
    {
        "id": "chatcmpl-bench0000000000000000000001",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 9, "total_tokens": 28},
    }
)

REQUEST_BODY: Final[bytes] = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {
                "role": "system",
                "content": "You are a concise assistant. Answer in one short sentence.",
            },
            {
                "role": "user",
                "content": (
                    "Summarise the benefits of routing LLM requests across several API keys "
                    "with quota awareness, automatic failover and per-key cost tracking, "
                    "keeping the answer short and practical for an engineering audience."
                ),
            },
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "stream": False,
        "user": "bench-user-0001",
        "metadata": {"tenant": "bench-tenant-0001", "trace_id": "0123456789abcdef0123"},
    }
)

REQUEST_HEADERS: Final[dict[str, str]] = {
    "Content-Type": "application/json",
    "Authorization": "Bearer sk-bench-not-a-real-key",
}

# ---------------------------------------------------------------------------------------------
# Upstream server (runs in a child process)
# ---------------------------------------------------------------------------------------------

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(RESPONSE_BODY)).encode()),
]
_OK_BODY: Final = b"ok"
_OK_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(_OK_BODY)).encode()),
]


async def upstream_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Minimal raw ASGI app: POST -> fixed chat completion JSON; anything else -> ``ok``."""
    if scope["type"] != "http":  # no lifespan (disabled in config), no websockets
        return
    more_body = True
    while more_body:  # drain the request body completely
        message = await receive()
        more_body = bool(message.get("more_body", False))
    if scope["method"] == "POST":
        headers, body = _JSON_HEADERS, RESPONSE_BODY
    else:
        headers, body = _OK_HEADERS, _OK_BODY
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def run_upstream_server(port_conn: multiprocessing.connection.Connection) -> None:
    """Child-process entry point: bind an ephemeral port, report it, then serve forever."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    port_conn.send(int(sock.getsockname()[1]))
    port_conn.close()
    config = uvicorn.Config(
        upstream_app,
        loop="auto",  # uvloop if installed
        http="auto",  # httptools if installed
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=60,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _http_get_ok(port: int) -> bool:
    """One readiness probe: a real HTTP request over a fresh connection."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as conn:
            conn.sendall(
                f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass
class UpstreamServer:
    process: multiprocessing.process.BaseProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    def cpu_seconds(self) -> float | None:
        """Total user+system CPU time of the server process (Linux /proc), else ``None``."""
        pid = self.process.pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                stat = fh.read()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        # fields[0] is "state" (field 3 of the stat line); utime/stime are fields 14/15.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5.0)


def start_upstream_server() -> UpstreamServer:
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=run_upstream_server, args=(child_conn,), daemon=True)
    process.start()
    child_conn.close()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    server: UpstreamServer | None = None
    try:
        if not parent_conn.poll(SERVER_START_TIMEOUT_S):
            raise RuntimeError("upstream server did not report its port in time")
        port = parent_conn.recv()
        if not isinstance(port, int):
            raise RuntimeError(f"unexpected port message from upstream server: {port!r}")
        server = UpstreamServer(process=process, port=port)
        while not _http_get_ok(port):
            if not process.is_alive():
                raise RuntimeError(f"upstream server exited early (code {process.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError("upstream server did not become ready in time")
            time.sleep(READY_POLL_INTERVAL_S)  # polling interval, not a fixed start-up delay
    except BaseException:
        (server or UpstreamServer(process=process, port=0)).stop()
        raise
    finally:
        parent_conn.close()
    return server


# ---------------------------------------------------------------------------------------------
# Clients under test
# ---------------------------------------------------------------------------------------------

PostFn = Callable[[], Awaitable[int]]
"""Performs one POST, reads the whole body, returns its length; raises on non-200."""
ClientFactory = Callable[[str, int], AbstractAsyncContextManager[PostFn]]


class BadStatusError(Exception):
    pass


def _aiohttp_session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=concurrency,
        keepalive_timeout=60.0,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        trust_env=False,
    )


@asynccontextmanager
async def aiohttp_client(url: str, concurrency: int) -> AsyncIterator[PostFn]:
    async with _aiohttp_session(concurrency) as session:

        async def post() -> int:
            async with session.post(url, data=REQUEST_BODY, headers=REQUEST_HEADERS) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise BadStatusError(resp.status)
            return len(body)

        yield post


def _httpx_post_fn(client: httpx.AsyncClient, url: str) -> PostFn:
    async def post() -> int:
        resp = await client.post(url, content=REQUEST_BODY, headers=REQUEST_HEADERS)
        body = resp.content  # non-streaming request: body already fully read
        if resp.status_code != 200:
            raise BadStatusError(resp.status_code)
        return len(body)

    return post


def _httpx_limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(
        max_connections=concurrency,
        max_keepalive_connections=concurrency,
        keepalive_expiry=60.0,
    )


@asynccontextmanager
async def httpx_client(url: str, concurrency: int) -> AsyncIterator[PostFn]:
    async with httpx.AsyncClient(
        limits=_httpx_limits(concurrency),
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
        trust_env=False,  # never pick up proxy env vars: traffic must stay on 127.0.0.1
    ) as client:
        yield _httpx_post_fn(client, url)


@asynccontextmanager
async def httpx_aiohttp_client(url: str, concurrency: int) -> AsyncIterator[PostFn]:
    # Same aiohttp session configuration as the plain aiohttp client, so the difference
    # between the two rows is the cost of the httpx layer on top. The transport closes
    # the session on aclose().
    transport = AiohttpTransport(client=_aiohttp_session(concurrency))
    async with httpx.AsyncClient(
        transport=transport,
        limits=_httpx_limits(concurrency),
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
        trust_env=False,
    ) as client:
        yield _httpx_post_fn(client, url)


CLIENTS: Final[dict[str, ClientFactory]] = {
    "aiohttp": aiohttp_client,
    "httpx": httpx_client,
    "httpx+aiohttp": httpx_aiohttp_client,
}

# ---------------------------------------------------------------------------------------------
# Load generation and measurement
# ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    client: str
    concurrency: int
    seconds: float
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies_ns)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, pct: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
        return ordered[rank - 1] / 1e6

    @property
    def cpu_us_per_req(self) -> float:
        return self.client_cpu_s / self.requests * 1e6 if self.requests else math.nan

    @property
    def server_cpu_pct(self) -> float | None:
        if self.server_cpu_s is None or self.seconds <= 0:
            return None
        return 100.0 * self.server_cpu_s / self.seconds


async def run_one(
    name: str,
    factory: ClientFactory,
    server: UpstreamServer,
    concurrency: int,
    warmup_s: float,
    seconds: float,
) -> RunResult:
    result = RunResult(client=name, concurrency=concurrency, seconds=seconds)
    perf = time.perf_counter_ns
    async with factory(server.url, concurrency) as post:
        # Sanity check before timing anything.
        size = await post()
        if size != len(RESPONSE_BODY):
            raise RuntimeError(f"{name}: unexpected response size {size}")

        start_ns = perf()
        measure_start_ns = start_ns + int(warmup_s * 1e9)
        measure_end_ns = measure_start_ns + int(seconds * 1e9)
        latencies = result.latencies_ns

        async def worker() -> None:
            while True:
                t0 = perf()
                if t0 >= measure_end_ns:
                    return
                try:
                    await post()
                except Exception as exc:
                    t1 = perf()
                    if measure_start_ns <= t1 < measure_end_ns:
                        result.errors += 1
                        if result.first_error is None:
                            result.first_error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(0)
                    continue
                t1 = perf()
                if measure_start_ns <= t1 < measure_end_ns:
                    latencies.append(t1 - t0)

        async def sampler() -> None:
            # Sample CPU counters at the window boundaries (same event loop as the workers).
            await asyncio.sleep(max(0.0, (measure_start_ns - perf()) / 1e9))
            cpu0, srv0, w0 = time.process_time(), server.cpu_seconds(), perf()
            await asyncio.sleep(max(0.0, (measure_end_ns - perf()) / 1e9))
            cpu1, srv1, w1 = time.process_time(), server.cpu_seconds(), perf()
            result.client_cpu_s = (cpu1 - cpu0) * seconds / max((w1 - w0) / 1e9, 1e-9)
            if srv0 is not None and srv1 is not None:
                result.server_cpu_s = (srv1 - srv0) * seconds / max((w1 - w0) / 1e9, 1e-9)

        tasks = [worker() for _ in range(concurrency)]
        await asyncio.wait_for(
            asyncio.gather(sampler(), *tasks), timeout=warmup_s + seconds + RUN_GRACE_S
        )
    return result


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


REPORTED_DISTRIBUTIONS: Final = (
    "aiohttp",
    "httpx",
    "httpcore",
    "httpx-aiohttp",
    "anyio",
    "sniffio",
    "uvicorn",
    "uvloop",
    "httptools",
    "orjson",
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_environment(loop_name: str, server: UpstreamServer) -> None:
    print("Environment")
    print(f"  python        {platform.python_version()} ({platform.python_implementation()})")
    print(f"  platform      {platform.platform()}  cpus={os.cpu_count()}")
    print(f"  client loop   {loop_name}")
    for dist in REPORTED_DISTRIBUTIONS:
        print(f"  {dist:<13} {_version(dist)}")
    print(
        f"  upstream      uvicorn raw ASGI, pid={server.process.pid}, http://{HOST}:{server.port}"
        f"  (request body {len(REQUEST_BODY)} B, response body {len(RESPONSE_BODY)} B)"
    )
    print()


def print_table(results: Sequence[RunResult], warmup_s: float, seconds: float) -> None:
    best_by_conc: dict[int, float] = {}
    for r in results:
        best_by_conc[r.concurrency] = max(best_by_conc.get(r.concurrency, 0.0), r.rps)

    headers = (
        "client",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "vs best",
        "cli CPU us/req",
        "srv CPU %",
        "errors",
    )
    rows: list[tuple[str, ...]] = []
    for r in results:
        best = best_by_conc[r.concurrency]
        srv = r.server_cpu_pct
        rows.append(
            (
                r.client,
                str(r.concurrency),
                f"{r.rps:,.0f}",
                f"{r.percentile_ms(50):.2f}",
                f"{r.percentile_ms(99):.2f}",
                f"{r.rps / best:.2f}x" if best > 0 else "n/a",
                f"{r.cpu_us_per_req:.0f}",
                f"{srv:.0f}" if srv is not None else "n/a",
                str(r.errors),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        parts = [c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return " | ".join(parts)

    print(
        f"Results ({warmup_s:g} s warm-up + {seconds:g} s measured per row; "
        "'vs best' = req/s relative to the fastest client at the same concurrency)"
    )
    print(fmt(headers))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))
    print()

    for r in results:
        if r.first_error is not None:
            print(f"  {r.client} @ {r.concurrency}: first error: {r.first_error}")

    # Overall winner: geometric mean of per-concurrency ratios to the best.
    ratios: dict[str, list[float]] = {}
    for r in results:
        best = best_by_conc[r.concurrency]
        ratios.setdefault(r.client, []).append(r.rps / best if best > 0 else 0.0)
    scores = {
        name: math.exp(sum(math.log(max(x, 1e-9)) for x in xs) / len(xs))
        for name, xs in ratios.items()
    }
    ranking = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    print("Overall (geometric mean of 'vs best' across concurrency levels):")
    for name, score in ranking:
        print(f"  {name:<14} {score:.2f}x")
    print(f"Fastest overall: {ranking[0][0]}")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


async def run_all(
    server: UpstreamServer,
    clients: Sequence[str],
    concurrencies: Sequence[int],
    warmup_s: float,
    seconds: float,
) -> list[RunResult]:
    loop = asyncio.get_running_loop()
    loop_name = f"{type(loop).__module__}.{type(loop).__qualname__}"
    print_environment(loop_name, server)
    results: list[RunResult] = []
    for concurrency in concurrencies:
        for name in clients:
            gc.collect()
            print(f"running {name:<14} concurrency={concurrency:<4} ...", end=" ", flush=True)
            res = await run_one(name, CLIENTS[name], server, concurrency, warmup_s, seconds)
            print(
                f"{res.rps:,.0f} req/s  p50={res.percentile_ms(50):.2f} ms  "
                f"p99={res.percentile_ms(99):.2f} ms",
                flush=True,
            )
            results.append(res)
    print()
    return results


def sniffio_missing() -> bool:
    return importlib.util.find_spec("sniffio") is None


def install_sniffio_shim() -> None:
    """Register a stub ``sniffio`` module that always answers "asyncio".

    httpcore's ``current_async_library()`` does ``import sniffio`` inside a try/except every time
    one of its locks/events is set up (several times per request). When sniffio is not installed
    (anyio >= 4.x no longer depends on it) each of those is a *failed* import that walks sys.path.
    This opt-in shim shows what httpx costs once that packaging artefact is removed (equivalent
    to adding ``sniffio`` as a dependency). Only valid because this script never runs trio.
    """
    shim = types.ModuleType("sniffio")

    def current_async_library() -> str:
        return "asyncio"

    shim.current_async_library = current_async_library  # type: ignore[attr-defined]
    sys.modules["sniffio"] = shim


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            print("uvloop not available; falling back to the default asyncio loop")
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[8, 32],
        help="concurrent worker coroutines (one run per value)",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=list(CLIENTS),
        default=list(CLIENTS),
        help="clients to benchmark",
    )
    parser.add_argument(
        "--sniffio-shim",
        action="store_true",
        help="if sniffio is missing, stub it so httpcore stops re-trying the import per request",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be > 0 and --warmup >= 0")
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency values must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seconds: float = args.seconds
    warmup_s: float = args.warmup
    concurrencies: list[int] = args.concurrency
    clients: list[str] = args.clients

    if sniffio_missing():
        if args.sniffio_shim:
            install_sniffio_shim()
            print("NOTE: sniffio not installed -> stub module installed (--sniffio-shim)")
        else:
            print(
                "NOTE: sniffio is not installed: httpcore (httpx's default transport) re-attempts "
                "`import sniffio` several times per request; pass --sniffio-shim to see httpx "
                "without that cost."
            )
    server = start_upstream_server()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(not args.no_uvloop)) as runner:
            results = runner.run(run_all(server, clients, concurrencies, warmup_s, seconds))
    finally:
        server.stop()
    print_table(results, warmup_s, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
