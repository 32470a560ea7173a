"""A one-minute tour: a simulated provider with four keys, and the router at work.

Run with ``./scripts/run.sh`` (or ``python -m apikeyrouter.demo``). No real key is needed: the
keys below exist only inside the simulated provider started here on a free local port.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from apikeyrouter import ApiKeyRouter, NoKeyAvailableError, OpenAIAdapter
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider, run_simulator_in_thread

DEMO_KEYS: dict[str, tuple[str, dict[str, Any], str]] = {
    # name: (secret, simulator behaviour, what it shows)
    "steady": ("sk-demo-steady-0000000000000001", {"rpm": 120}, "a healthy key"),
    "small": ("sk-demo-small-00000000000000002", {"rpm": 3}, "runs into its rate limit"),
    "revoked": ("sk-demo-revoked-000000000000003", {"invalid": True}, "was revoked upstream"),
    "flaky": ("sk-demo-flaky-00000000000000004", {"rpm": 120}, "returns 500s for a while"),
}


def _names(router: ApiKeyRouter) -> dict[str, str]:
    return {key.id: str(key.metadata.get("name", key.id)) for key in router.keys.list_keys()}


def _print(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def tour(requests: int, base_url: str) -> None:
    router = ApiKeyRouter()
    await router.register_provider("openai", OpenAIAdapter(base_url))
    for name, (secret, _, role) in DEMO_KEYS.items():
        key = await router.register_key(secret, "openai", metadata={"name": name, "role": role})
        _print(f"registered {name:<8} as {key.id}  ({role})")
    names = _names(router)
    _print()
    _print(f"routing {requests} chat requests (objective: fairness)")
    body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 16}
    for n in range(1, requests + 1):
        body["messages"] = [{"role": "user", "content": f"Request number {n}, say hello."}]
        try:
            response = await router.route(dict(body))
        except NoKeyAvailableError as exc:
            _print(f"#{n:02d} refused: {exc.message} (retry_after={exc.retry_after})")
            continue
        path = " -> ".join(f"{names[a.key_id]}:{a.outcome}" for a in response.attempts)
        _print(
            f"#{n:02d} served by {names[response.key_used]:<7} {response.latency_ms:6.1f} ms  "
            f"[{path}]"
        )
        if len(response.attempts) > 1:
            _print(f"     why: {response.decision.explanation}")
    _print()
    _print("streaming one request:")
    pieces: list[str] = []
    usage: dict[str, Any] | None = None
    stream_body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Stream me a greeting."}],
    }
    async for chunk in router.stream(stream_body):
        for choice in chunk.get("choices", []):
            pieces.append(choice.get("delta", {}).get("content") or "")
        usage = chunk.get("usage") or usage
    _print(f"  text: {''.join(pieces)!r}")
    _print(f"  usage: {usage}")
    _print()
    _print("key states and audit trail:")
    for key in router.keys.list_keys():
        _print(
            f"  {names[key.id]:<8} {key.state.value:<10} served={key.usage.successes:<3} "
            f"failed={key.usage.failures:<3} reason={key.state_reason or '-'}"
        )
    for transition in await router.store.list_audit(limit=20):
        _print(
            f"  audit: {names.get(transition.key_id, transition.key_id)} "
            f"{transition.from_state.value} -> {transition.to_state.value} ({transition.reason})"
        )
    await router.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=16, help="chat requests to route")
    parser.add_argument("--latency-ms", type=float, default=15.0, help="simulated latency")
    args = parser.parse_args(argv)
    provider = SimulatedProvider(latency_ms=args.latency_ms, seed=7)
    for name, (secret, behaviour, _) in DEMO_KEYS.items():
        provider.add_key(SimKeyConfig(key=secret, label=name, **behaviour))
    provider.inject_fault("flaky", "status_500", count=3)
    with run_simulator_in_thread(provider) as server:
        _print(f"simulated OpenAI-compatible provider listening on {server.base_url}")
        asyncio.run(tour(args.requests, server.base_url))
        _print()
        _print("what the provider saw, per key:")
        for label, stats in provider.stats().items():
            _print(f"  {label:<10} {stats}")


if __name__ == "__main__":
    main()
