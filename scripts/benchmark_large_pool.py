"""Large key pools through the proxy, in process: what each operation costs at N keys.

Run: ``uv run python scripts/benchmark_large_pool.py [--keys 1000 10000]``. For each pool size
it writes a config file of N keys (one provider, a per-minute limit each), then times loading
it, starting the app, routing chat requests, a ``/metrics`` scrape, a page of
``GET /api/v1/keys`` and a reload of the unchanged file, and prints the process's resident
memory (an upper bound for the proxy's: the simulator and the client run in it too). The
upstream is the simulated provider
over an in-process transport, and the garbage collector is tuned as the CLI tunes it. Prints
numbers; asserts none.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider
from apikeyrouter_proxy.config import load_config
from apikeyrouter_proxy.main import create_app, lifespan

ADMIN_TOKEN = "benchmark-admin-token"  # noqa: S105 - a local benchmark's own token
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _secret(n: int) -> str:
    return f"sk-bench-pool-{n:08d}-xxxxxxxxxxxxxxxx"


def _write_config(path: Path, keys: int) -> None:
    lines = [
        "server:\n",
        f"  admin_token: {ADMIN_TOKEN}\n",
        "  watch_config: false\n",
        "providers:\n",
        "  - id: sim\n",
        "    base_url: http://sim.invalid/v1\n",
        "    keys:\n",
    ]
    for n in range(keys):
        lines += [
            f"      - id: k{n}\n",
            f"        key: {_secret(n)}\n",
            "        requests_per_minute: 600\n",
        ]
    path.write_text("".join(lines))


async def _timed(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _resident_mb() -> float:
    """Current resident set size (Linux), the benchmark's own client and simulator included."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _row(label: str, samples: list[float]) -> str:
    return f"  {label:<34} p50 {statistics.median(samples):9.2f} ms   max {max(samples):9.2f} ms"


async def run(keys: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "proxy.yaml"
        _write_config(path, keys)
        start = time.perf_counter()
        config = load_config(path)
        loaded = (time.perf_counter() - start) * 1000
        sim = SimulatedProvider([SimKeyConfig(key=_secret(n)) for n in range(keys)])
        app = create_app(config, transport=ASGITransport(sim), manage_gc=True)
        print(f"{keys} keys")
        print(f"  {'load and validate the config file':<34} {loaded:9.2f} ms")
        start = time.perf_counter()
        async with lifespan(app):
            started = (time.perf_counter() - start) * 1000
            print(f"  {'start (register every key)':<34} {started:9.2f} ms")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
                admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

                async def chat() -> None:
                    response = await client.post("/v1/chat/completions", json=BODY)
                    response.raise_for_status()

                async def scrape() -> None:
                    (await client.get("/metrics")).raise_for_status()

                async def page() -> None:
                    response = await client.get("/api/v1/keys?limit=100", headers=admin)
                    response.raise_for_status()

                await _timed(chat, requests)  # every key seen once at least: steady state
                print(_row("chat request (in process)", await _timed(chat, requests)))
                print(_row("/metrics scrape", await _timed(scrape, 5)))
                print(_row("GET /api/v1/keys?limit=100", await _timed(page, 20)))
                runtime = app.runtime
                print(_row("reload of the unchanged config", await _timed(
                    lambda: runtime.apply(config), 3)))  # fmt: skip
                print(f"  {'resident memory of this process':<34} {_resident_mb():9.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--requests", type=int, default=500, help="chat requests per pool")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    for keys in args.keys:
        asyncio.run(run(keys, args.requests))


if __name__ == "__main__":
    main()
