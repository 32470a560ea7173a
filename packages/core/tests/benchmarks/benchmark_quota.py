"""Quota benchmark: does the router keep an application away from 429s, at what throughput?

Drives the simulated provider (real HTTP, per-key token buckets with real rate-limit headers,
keys of unequal limits) at several fractions of the keys' aggregate capacity, for a fixed time
each, twice: with the limits configured in the router, and with the router told nothing and
learning them from the headers. Prints, per run: requests offered and served, upstream 429s
the router received, client-visible failures (and whether each carried ``retry_after``), and
served / aggregate capacity.

Run: ``uv run python packages/core/tests/benchmarks/benchmark_quota.py [--seconds 30]
[--warmup 60]`` (about 20 minutes with the defaults).
Bounded in time; all traffic on 127.0.0.1. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from apikeyrouter import ApiKeyRouter, NoKeyAvailableError, OpenAIAdapter, RetryPolicy
from apikeyrouter.domain.interfaces.provider_adapter import UpstreamSuccess
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider, run_simulator_in_thread
from apikeyrouter.utils.validation import intent_from_openai

MAX_TOKENS = 16
BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Quota benchmark: please answer in one line."}],
    "max_tokens": MAX_TOKENS,
}
# (rpm, tpm): unequal keys; two are bound by tokens rather than requests.
KEYS = [(30, None), (60, 100_000), (120, 2_400), (240, 5_000), (90, None)]


@dataclass
class RunResult:
    offered: int = 0
    served: int = 0
    refused_with_retry_after: int = 0
    other_failures: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)


def capacity_per_minute(tokens_per_request: int) -> float:
    total = 0.0
    for rpm, tpm in KEYS:
        by_tokens = tpm / tokens_per_request if tpm else float("inf")
        total += min(rpm, by_tokens)
    return total


async def drive(router: ApiKeyRouter, rate_per_second: float, seconds: float) -> RunResult:
    result = RunResult()
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        try:
            await router.route(dict(BODY))
            result.served += 1
        except NoKeyAvailableError as exc:
            if exc.retry_after is not None:
                result.refused_with_retry_after += 1
            else:
                result.other_failures += 1
            result.failure_kinds[type(exc).__name__] = (
                result.failure_kinds.get(type(exc).__name__, 0) + 1
            )
        except Exception as exc:  # counted and reported, never hidden
            result.other_failures += 1
            name = type(exc).__name__
            result.failure_kinds[name] = result.failure_kinds.get(name, 0) + 1

    start = time.monotonic()
    interval = 1.0 / rate_per_second
    n = 0
    while True:
        due = start + n * interval
        if due - start >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the open-loop load, not synchronisation
        tasks.append(asyncio.create_task(one()))
        result.offered += 1
        n += 1
    await asyncio.gather(*tasks)
    return result


async def run_level(
    base_url: str,
    provider: SimulatedProvider,
    level: float,
    seconds: float,
    warmup: float,
    configured: bool,
) -> tuple[RunResult, int, float]:
    """One run; the 429 count covers the warm-up too, the served ratio the measured part."""
    provider.reset()
    router = ApiKeyRouter(
        retry_policy=RetryPolicy(max_attempts=4, deadline_seconds=10, attempt_timeout_seconds=5),
    )
    await router.register_provider("openai", OpenAIAdapter(base_url))
    for index, (rpm, tpm) in enumerate(KEYS):
        limits: dict[str, Any] = {}
        if configured:
            limits["requests_per_minute"] = rpm
            if tpm:
                limits["tokens_per_minute"] = tpm
        await router.register_key(f"sk-quota-bench-{index:02d}-xxxxxxxx", "openai", **limits)
    capacity = capacity_per_minute(await tokens_per_request(base_url)) / 60.0
    if warmup > 0:  # reach the steady state first: per-minute windows start out empty
        await drive(router, capacity * level, warmup)
    result = await drive(router, capacity * level, seconds)
    upstream_429 = sum(
        stats.status_429 for label, stats in provider.stats().items() if label != "probe"
    )
    await router.close()
    return result, upstream_429, capacity * seconds


async def tokens_per_request(base_url: str) -> int:
    """What the provider charges one benchmark request: its prompt plus max_tokens."""
    adapter = OpenAIAdapter(base_url)
    probe = await adapter.send(intent_from_openai(dict(BODY)), "sk-quota-probe-xxxxxxxx", 5.0)
    await adapter.close()
    if not isinstance(probe, UpstreamSuccess):
        raise RuntimeError(f"probe request failed: {probe.message}")
    return probe.usage.prompt_tokens + MAX_TOKENS


async def main_async(seconds: float, warmup: float, levels: list[float]) -> None:
    configs = [
        SimKeyConfig(
            key=f"sk-quota-bench-{index:02d}-xxxxxxxx", rpm=rpm, tpm=tpm, label=f"k{index}"
        )
        for index, (rpm, tpm) in enumerate(KEYS)
    ]
    configs.append(SimKeyConfig(key="sk-quota-probe-xxxxxxxx", label="probe"))
    # Keys given at construction survive provider.reset() between runs.
    provider = SimulatedProvider(configs, seed=3)
    with run_simulator_in_thread(provider) as server:
        print(
            f"keys (rpm, tpm): {KEYS}; per run {warmup:.0f} s warm-up, then {seconds:.0f} s "
            "measured (offered/served/refused count the measured part; 429s count both)"
        )
        header = (
            f"{'mode':<11}{'demand':>7}{'offered':>9}{'served':>8}{'429s up':>9}"
            f"{'refused':>9}{'w/ retry':>9}{'other':>7}{'served/cap':>12}"
        )
        print(header)
        for configured in (True, False):
            for level in levels:
                result, upstream_429, capacity = await run_level(
                    server.base_url, provider, level, seconds, warmup, configured
                )
                refused = result.refused_with_retry_after + result.other_failures
                print(
                    f"{'configured' if configured else 'learned':<11}{level:>6.0%}"
                    f"{result.offered:>9}{result.served:>8}{upstream_429:>9}{refused:>9}"
                    f"{result.refused_with_retry_after:>9}{result.other_failures:>7}"
                    f"{result.served / capacity:>12.1%}"
                )
                if result.failure_kinds:
                    print(f"{'':<11}failures: {result.failure_kinds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="measured time per run (a whole window)"
    )
    parser.add_argument("--warmup", type=float, default=60.0, help="steady-state warm-up")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.8, 0.9, 1.0, 1.5])
    args = parser.parse_args()
    asyncio.run(main_async(args.seconds, args.warmup, args.levels))


if __name__ == "__main__":
    main()
