"""The OpenAI-compatible endpoints in process: bodies, headers, pass-through, streaming."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimulatedProvider

from .conftest import KEY_A, KEY_B, KEY_BAD
from .support import RecordingTransport, chat_body, make_config, running_proxy, sse_events


async def test_chat_returns_upstream_body_and_routing_headers(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.chat(text="ping")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert "ping" in body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-apikeyrouter-key-id"] == "a"
    assert response.headers["x-apikeyrouter-provider"] == "sim"
    assert response.headers["x-apikeyrouter-attempts"] == "1"
    assert response.headers["x-request-id"].startswith("req_")
    assert float(response.headers["x-apikeyrouter-cost-usd"]) > 0  # gpt-4o-mini is priced


async def test_request_id_is_echoed_and_reaches_the_routing_decision(
    sim: SimulatedProvider,
) -> None:
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-request-id": "caller-42"}
        )
        unsafe = await proxy.client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-request-id": "bad id\twith tab"}
        )
        decisions = await proxy.runtime.router.store.recent_decisions(10)
    assert response.headers["x-request-id"] == "caller-42"
    assert decisions[0].request_id == "caller-42"
    assert unsafe.headers["x-request-id"].startswith("req_")  # not echoed: unsafe characters


async def test_unknown_body_fields_pass_through_untouched(sim: SimulatedProvider) -> None:
    recorder = RecordingTransport(ASGITransport(sim))
    config = make_config([{"id": "a", "key": KEY_A}])
    extra: dict[str, Any] = {
        "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "x_vendor_field": {"nested": [1, 2, {"deep": True}]},
    }
    async with running_proxy(config, sim, transport=recorder) as proxy:
        response = await proxy.chat(**extra)
    assert response.status_code == 200
    sent = recorder.bodies[-1]
    for name, value in extra.items():
        assert sent[name] == value


async def test_failover_is_visible_in_headers(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "bad", "key": KEY_BAD, "weight": 1000}, {"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.chat()
    assert response.status_code == 200
    assert response.headers["x-apikeyrouter-key-id"] == "a"
    assert response.headers["x-apikeyrouter-attempts"] == "2"


async def test_completions_and_embeddings(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        completion = await proxy.client.post(
            "/v1/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}
        )
        embedding = await proxy.client.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a", "b"]}
        )
    assert completion.status_code == 200
    assert completion.json()["object"] == "text_completion"
    assert completion.headers["x-apikeyrouter-key-id"] == "a"
    assert embedding.status_code == 200
    data = embedding.json()["data"]
    assert len(data) == 2
    assert all(isinstance(item["embedding"], list) for item in data)


async def test_models_list_and_lookup(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        listing = await proxy.client.get("/v1/models")
        one = await proxy.client.get("/v1/models/gpt-4o-mini")
        missing = await proxy.client.get("/v1/models/no-such-model")
    assert listing.status_code == 200
    ids = {m["id"] for m in listing.json()["data"]}
    assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"} <= ids
    assert one.json() == {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "sim"}
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_models_list_uses_configured_models_and_skips_keyless_providers(
    sim: SimulatedProvider,
) -> None:
    config = make_config([{"id": "a", "key": KEY_A}], provider={"models": ["gpt-4o"]})
    async with running_proxy(config, sim) as proxy:
        await proxy.client.post(
            "/api/v1/providers",
            json={"id": "empty", "base_url": "http://nowhere.test/v1", "models": ["other"]},
            headers={"Authorization": "Bearer admin-token-for-tests"},
        )
        listing = await proxy.client.get("/v1/models")
    assert [m["id"] for m in listing.json()["data"]] == ["gpt-4o"]


async def test_streaming_sends_every_chunk_then_done(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.chat(stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-apikeyrouter-key-id"] == "a"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text
    assert chunks[-1]["usage"]["total_tokens"] > 0  # include_usage is always requested upstream


async def test_stream_fails_over_before_the_first_chunk(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "bad", "key": KEY_BAD, "weight": 1000}, {"id": "b", "key": KEY_B}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.chat(stream=True)
    assert response.headers["x-apikeyrouter-key-id"] == "b"
    assert response.headers["x-apikeyrouter-attempts"] == "2"
    assert sse_events(response.text)[-1] == "[DONE]"


async def test_stream_broken_after_output_ends_with_an_error_event(sim: SimulatedProvider) -> None:
    sim.inject_fault("a", "drop_stream", count=1, after_chunks=2)
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.chat(stream=True)
    assert response.status_code == 200  # the status line was sent with the first chunk
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])
    assert error["error"]["code"] == "stream_interrupted"
    assert error["error"]["type"] == "upstream_error"
    assert len(events) >= 4  # some real chunks made it out before the break


async def test_client_disconnect_stops_the_upstream_stream(sim: SimulatedProvider) -> None:
    sim.set_latency(chunk_delay_ms=20, key="a")
    config = make_config([{"id": "a", "key": KEY_A}])
    body = orjson.dumps(chat_body(stream=True))
    first_chunk = asyncio.Event()
    sent: list[MutableMapping[str, Any]] = []
    requested = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_chunk.set()

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    async with running_proxy(config, sim) as proxy:
        await asyncio.wait_for(proxy.app(scope, receive, send), timeout=10)
        router = proxy.runtime.router
        stats = router.stats("a")
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    # 16 tokens at 20 ms each would take 320 ms; the disconnect cut it short after one chunk.
    assert len(bodies) < 5
    assert stats.in_flight == 0  # the upstream stream was closed and the key released


async def test_model_groups_are_listed_and_routed(sim: SimulatedProvider) -> None:
    groups = [
        {"name": "smart", "members": ["sim/gpt-4o", "sim/gpt-4o-mini"]},
        {"name": "unservable", "members": ["nowhere/some-model"]},
    ]
    config = make_config([{"id": "a", "key": KEY_A}], model_groups=groups)
    async with running_proxy(config, sim) as proxy:
        listing = await proxy.client.get("/v1/models")
        response = await proxy.client.post(
            "/v1/chat/completions", json={**chat_body(), "model": "smart"}
        )
        report = await proxy.runtime.apply(make_config([{"id": "a", "key": KEY_A}]))
        gone = await proxy.client.post(
            "/v1/chat/completions", json={**chat_body(), "model": "smart"}
        )
    owners = {m["id"]: m["owned_by"] for m in listing.json()["data"]}
    assert owners["smart"] == "model-group"
    assert "unservable" not in owners
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o"
    assert sorted(report.groups_removed) == ["smart", "unservable"]
    assert gone.status_code == 404
