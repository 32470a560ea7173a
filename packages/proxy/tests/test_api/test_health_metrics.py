"""Health probes, the Prometheus exposition, and tracing spans."""

from __future__ import annotations

import re

from apikeyrouter.testing import SimulatedProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import KEY_A, KEY_B, KEY_BAD
from .support import ADMIN, make_config, running_proxy


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample, matching the given labels (others may be present)."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_live_and_ready(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"id": "a", "key": KEY_A}]), sim) as proxy:
        live = await proxy.client.get("/health/live")
        ready = await proxy.client.get("/health/ready")
        await proxy.client.patch("/api/v1/keys/a", headers=ADMIN, json={"state": "disabled"})
        not_ready = await proxy.client.get("/health/ready")
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    assert ready.status_code == 200
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "unavailable"
    assert "no key is currently routable" in not_ready.json()["reasons"]


async def test_not_ready_when_every_circuit_is_open(sim: SimulatedProvider) -> None:
    sim.inject_fault("a", "status_500", count=-1)
    config = make_config([{"id": "a", "key": KEY_A}], circuit={"failure_threshold": 1})
    async with running_proxy(config, sim) as proxy:
        assert (await proxy.client.get("/health/ready")).status_code == 200
        assert (await proxy.chat()).status_code == 503
        ready = await proxy.client.get("/health/ready")
    assert ready.status_code == 503


async def test_not_ready_without_keys(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([]), sim) as proxy:
        ready = await proxy.client.get("/health/ready")
        live = await proxy.client.get("/health/live")
    assert ready.status_code == 503
    assert live.status_code == 200


async def test_metrics_exposition(sim: SimulatedProvider) -> None:
    sim.inject_fault("b", "status_429", count=1, retry_after_s=30)
    config = make_config(
        [
            {"id": "b", "key": KEY_B, "weight": 1000},
            {"id": "a", "key": KEY_A, "requests_per_minute": 100, "tokens_per_minute": 50000},
            {"id": "bad", "key": KEY_BAD, "weight": 0.001},
        ]
    )
    async with running_proxy(config, sim) as proxy:
        failed_over = await proxy.chat()  # b answers 429, a serves
        await proxy.chat()  # b cools down; "bad" (never used yet) is tried, found invalid; a serves
        await proxy.client.post("/v1/chat/completions", content=b"{nope")
        await proxy.client.get("/api/v1/keys", headers=ADMIN)
        response = await proxy.client.get("/metrics")
    assert failed_over.headers["x-apikeyrouter-attempts"] == "2"
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    requests = "apikeyrouter_proxy_requests_total"
    assert sample(text, requests, route="/v1/chat/completions", provider="sim", status="200") == 2
    assert sample(text, requests, route="/v1/chat/completions", provider="", status="400") == 1
    assert sample(text, requests, route="/api/v1/keys", status="200") == 1
    assert (
        sample(
            text, "apikeyrouter_proxy_request_duration_seconds_count", route="/v1/chat/completions"
        )
        == 3
    )
    assert (
        sample(
            text, "apikeyrouter_proxy_router_overhead_seconds_count", route="/v1/chat/completions"
        )
        == 2
    )
    assert sample(text, "apikeyrouter_proxy_failovers_total", route="/v1/chat/completions") == 2
    assert sample(text, "apikeyrouter_proxy_upstream_rate_limited_total", key_id="b") == 1
    assert sample(text, "apikeyrouter_key_state", key_id="b", state="throttled") == 1
    assert sample(text, "apikeyrouter_key_state", key_id="a", state="available") == 1
    assert sample(text, "apikeyrouter_key_state", key_id="a", state="throttled") == 0
    assert sample(text, "apikeyrouter_key_state", key_id="bad", state="invalid") == 1
    remaining = sample(
        text, "apikeyrouter_key_quota_remaining", key_id="a", metric="requests", window="minute"
    )
    assert remaining is not None
    assert remaining <= 98
    assert sample(text, "apikeyrouter_key_quota_limit", key_id="a", metric="tokens") == 50000
    spend = sample(text, "apikeyrouter_proxy_spend_usd_total", provider="sim", key_id="a")
    assert spend is not None
    assert spend > 0
    for secret in (KEY_A, KEY_B, KEY_BAD):
        assert secret not in text


async def test_tracing_spans_wrap_routing_and_the_upstream_call(sim: SimulatedProvider) -> None:
    exporter = InMemorySpanExporter()
    config = make_config([{"id": "bad", "key": KEY_BAD, "weight": 1000}, {"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim, span_exporter=exporter) as proxy:
        response = await proxy.chat()
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    route = [s for s in spans if s.name == "apikeyrouter.route"]
    upstream = [s for s in spans if s.name == "apikeyrouter.upstream"]
    assert len(route) == 1
    assert len(upstream) == 2  # one per attempt
    assert route[0].attributes is not None
    assert route[0].attributes["apikeyrouter.key_id"] == "a"
    assert route[0].attributes["apikeyrouter.attempts"] == 2
    for span in upstream:
        assert span.parent is not None
        assert span.parent.span_id == route[0].context.span_id
    outcomes = sorted(str((s.attributes or {})["apikeyrouter.outcome"]) for s in upstream)
    assert outcomes == ["invalid_key", "success"]
    for span in spans:
        assert KEY_BAD not in str(span.to_json())
        assert KEY_A not in str(span.to_json())


async def test_tracing_is_off_by_default(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        assert proxy.runtime.tracing is None
