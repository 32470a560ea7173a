"""Routing cost benchmark: decision time by key count, and a full route() in process.

Pools larger than the router's scan limit (64 routable keys per provider by default) are
scanned in turns, so the decision time should stay flat from 100 keys up.

Run: ``uv run python packages/core/tests/benchmarks/bench_routing.py`` (also from
``scripts/benchmark.sh``). Every figure is the awaited call, timed one call at a time with
``perf_counter_ns`` (not coroutine creation, not a batch average). Prints numbers; asserts none.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable

from apikeyrouter import ApiKeyRouter, OpenAIAdapter
from apikeyrouter.domain.models.request_context import Endpoint
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter.utils.validation import intent_from_openai

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Benchmark request, please answer briefly."}],
    "max_tokens": 16,
}


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _time_calls(
    call: Callable[[], Awaitable[object]], iterations: int, warmup: int = 0
) -> list[float]:
    samples: list[float] = []
    for _ in range(max(10, iterations // 10, warmup)):
        await call()
    gc.collect()
    for _ in range(iterations):
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


async def decision_time(key_count: int, iterations: int) -> list[float]:
    """Candidate filtering + ranking + reservation, i.e. everything before the upstream call."""
    router = ApiKeyRouter(record_decisions=False)
    await router.register_provider("openai", OpenAIAdapter("http://unused.invalid/v1"))
    for n in range(key_count):
        await router.register_key(
            f"sk-bench-{n:08d}-xxxxxxxx", "openai", requests_per_minute=10**9, weight=1 + n % 3
        )
    intent = intent_from_openai(BODY, Endpoint.CHAT)

    async def decide() -> None:
        # Policy resolution + plan + candidates + ranking + reservation: all but the call.
        run, steps = router._start_run(intent, None)
        run.enter(steps[0])
        lease = await router._selector.acquire(run)
        await router.recorder.abandon(lease)  # keep the state steady between calls

    # A pool larger than the scan limit is scanned in turns: warm up until every key has been
    # looked at twice, so the figures are the steady state, not first sight of each key.
    turns = key_count // (router.scan_limit or key_count)
    samples = await _time_calls(decide, iterations, warmup=2 * turns)
    await router.close()
    return samples


async def exhausted_pool(key_count: int, refusals: int) -> tuple[list[float], list[float]]:
    """Every key allows one request a minute (a frozen clock): the decision while the pool fills
    up key by key, then the refusal once every key is full (which ranks the whole pool)."""
    router = ApiKeyRouter(record_decisions=False, clock=lambda: 1_000_000.0)
    await router.register_provider("openai", OpenAIAdapter("http://unused.invalid/v1"))
    for n in range(key_count):
        await router.register_key(f"sk-bench-{n:08d}-xxxxxxxx", "openai", requests_per_minute=1)
    intent = intent_from_openai(BODY, Endpoint.CHAT)

    async def attempt() -> float:
        run, steps = router._start_run(intent, None)
        run.enter(steps[0])
        start = time.perf_counter_ns()
        outcome = await router._selector.try_acquire(run)
        elapsed = (time.perf_counter_ns() - start) / 1000.0
        if isinstance(outcome, Exception) != (len(filling) == key_count):
            raise RuntimeError(f"unexpected outcome: {outcome!r}")
        return elapsed

    filling: list[float] = []
    for _ in range(key_count):
        filling.append(await attempt())
    refused = [await attempt() for _ in range(refusals)]
    await router.close()
    return filling, refused


async def full_route(iterations: int) -> tuple[list[float], list[float]]:
    """route() over an in-process transport to the simulator, and the bare adapter call."""
    provider = SimulatedProvider()
    transport = ASGITransport(provider)
    router = ApiKeyRouter(record_decisions=False)
    adapter = OpenAIAdapter("http://sim/v1", transport=transport)
    await router.register_provider("openai", adapter)
    for n in range(10):
        secret = f"sk-bench-{n:08d}-xxxxxxxx"
        provider.add_key(secret)
        await router.register_key(secret, "openai", requests_per_minute=10**9)
    intent = intent_from_openai(BODY, Endpoint.CHAT)

    async def routed() -> None:
        await router.route(BODY)

    async def direct() -> None:
        await adapter.send(intent, "sk-bench-00000000-xxxxxxxx", 30.0)

    routed_samples = await _time_calls(routed, iterations)
    direct_samples = await _time_calls(direct, iterations)
    await router.close()
    return routed_samples, direct_samples


def _row(label: str, samples: list[float]) -> str:
    return (
        f"{label:<34} p50 {statistics.median(samples):9.1f} us   "
        f"p99 {_percentile(samples, 0.99):9.1f} us   mean {statistics.fmean(samples):9.1f} us"
    )


async def main_async(iterations: int, key_counts: list[int]) -> None:
    print("routing decision (filter + rank + reserve), awaited, one call at a time")
    for count in key_counts:
        runs = iterations if count <= 1000 else max(200, iterations // 10)
        print(_row(f"  {count:>6} keys", await decision_time(count, runs)))
    print("a pool of keys allowing one request a minute each: filling it, then refusals")
    for count in (1000, 10000):
        filling, refused = await exhausted_pool(count, 50)
        print(_row(f"  {count:>6} keys, while filling", filling))
        print(_row(f"  {count:>6} keys, refused when full", refused))
    routed, direct = await full_route(iterations)
    print("full request through the in-process ASGI transport to the simulator (10 keys)")
    print(_row("  ApiKeyRouter.route()", routed))
    print(_row("  adapter.send() alone (no routing)", direct))
    overhead = statistics.median(routed) - statistics.median(direct)
    print(f"  router overhead at p50: {overhead:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--keys", type=int, nargs="+", default=[10, 100, 1000, 10000])
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args.iterations, args.keys))


if __name__ == "__main__":
    main()
