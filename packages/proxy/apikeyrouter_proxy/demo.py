"""The proxy tour: a simulated provider, the proxy in front of it, and the official ``openai`` SDK.

Run with ``python -m apikeyrouter_proxy.demo``. No real key is needed: the four keys below exist
only inside the simulated provider started here on a free local port. The SDK talks to the proxy
exactly as it would to OpenAI; the proxy's response headers say which key served each request
and how many attempts it took, and its management API explains why.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import httpx
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider, run_simulator_in_thread
from openai import OpenAI

from apikeyrouter_proxy.config import ProxyConfig
from apikeyrouter_proxy.main import create_app
from apikeyrouter_proxy.server import ThreadedServer

ADMIN_TOKEN = "demo-admin-token"  # noqa: S105 - a demo-only token for a local, throwaway proxy
DEMO_KEYS: dict[str, tuple[str, dict[str, Any], str]] = {
    # id: (secret, simulator behaviour, what it shows)
    "steady": ("sk-demo-steady-0000000000000001", {"rpm": 120}, "a healthy key"),
    "small": ("sk-demo-small-00000000000000002", {"rpm": 3}, "runs into its rate limit"),
    "revoked": ("sk-demo-revoked-000000000000003", {"invalid": True}, "was revoked upstream"),
    "flaky": ("sk-demo-flaky-00000000000000004", {"rpm": 120}, "returns 500s for a while"),
}


def _print(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def proxy_config(base_url: str) -> ProxyConfig:
    keys = [{"id": key_id, "key": secret} for key_id, (secret, _, _) in DEMO_KEYS.items()]
    return ProxyConfig.model_validate(
        {
            "server": {"admin_token": ADMIN_TOKEN, "watch_config": False},
            "routing": {"objective": "fairness", "max_attempts": 4},
            "circuit": {"failure_threshold": 3, "open_seconds": 30},
            "providers": [{"id": "openai", "base_url": base_url, "keys": keys}],
            "logging": {"access_log": False},
        }
    )


def tour(proxy_url: str, requests: int) -> None:
    client = OpenAI(base_url=proxy_url + "/v1", api_key="not-needed-for-an-open-proxy")
    admin = httpx.Client(
        base_url=proxy_url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    _print(f"routing {requests} chat requests through the proxy with the openai SDK")
    for n in range(1, requests + 1):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Request number {n}, say hello."}],
            max_tokens=16,
        )
        completion = raw.parse()
        key_id = raw.headers["x-apikeyrouter-key-id"]
        attempts = int(raw.headers["x-apikeyrouter-attempts"])
        text = completion.choices[0].message.content or ""
        _print(f"#{n:02d} served by {key_id:<8} attempts={attempts}  {text[:40]!r}")
        if attempts > 1:
            decision = admin.get("/state/decisions", params={"limit": 1}).json()[-1]
            _print(f"     why: {decision['explanation']}")
    _print()
    _print("streaming one request:")
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Stream me a greeting."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    for chunk in stream:
        pieces.extend(choice.delta.content or "" for choice in chunk.choices)
        usage = chunk.usage or usage
    _print(f"  text: {''.join(pieces)!r}")
    _print(f"  usage: {usage.model_dump() if usage else None}")
    _print()
    _print("key states (GET /api/v1/keys) and audit trail (GET /api/v1/state/audit):")
    for key in admin.get("/keys").json():
        usage_counts = key["usage"]
        _print(
            f"  {key['id']:<8} {key['state']:<10} served={usage_counts['successes']:<3} "
            f"failed={usage_counts['failures']:<3} reason={key['state_reason'] or '-'}"
        )
    for transition in admin.get("/state/audit", params={"limit": 20}).json():
        _print(
            f"  audit: {transition['key_id']} {transition['from_state']} -> "
            f"{transition['to_state']} ({transition['reason']})"
        )
    admin.close()
    client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=16, help="chat requests to send")
    parser.add_argument("--latency-ms", type=float, default=15.0, help="simulated latency")
    args = parser.parse_args(argv)
    started = time.monotonic()
    provider = SimulatedProvider(latency_ms=args.latency_ms, seed=7)
    for key_id, (secret, behaviour, role) in DEMO_KEYS.items():
        provider.add_key(SimKeyConfig(key=secret, label=key_id, **behaviour))
        _print(f"simulated key {key_id:<8} {role}")
    provider.inject_fault("flaky", "status_500", count=3)
    with run_simulator_in_thread(provider) as simulator:
        _print(f"simulated OpenAI-compatible provider on {simulator.base_url}")
        app = create_app(proxy_config(simulator.base_url))
        with ThreadedServer(app) as proxy:
            _print(f"apikeyrouter proxy on {proxy.url}/v1 (management API at /api/v1, docs /docs)")
            _print()
            tour(proxy.url, args.requests)
    _print()
    _print("what the provider saw, per key:")
    for label, stats in provider.stats().items():
        _print(f"  {label:<10} {stats}")
    _print(f"done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
