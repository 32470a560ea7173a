"""Every error path of ``/v1``: OpenAI-shaped bodies, the right status, the right headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
)
from apikeyrouter.testing import SimulatedProvider

from .conftest import KEY_A, KEY_B, KEY_BAD
from .support import chat_body, make_config, running_proxy


def assert_openai_error(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


async def test_malformed_json_is_400_naming_the_position(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        response = await proxy.client.post(
            "/v1/chat/completions",
            content=b'{"model": "gpt-4o-mini",\n "messages": [}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    error = assert_openai_error(response.json())
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    assert "line 2" in error["message"]
    assert "column" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "gpt-4o-mini", "messages": "hello"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"content": "no role"}]}, "messages[0]"),
        (chat_body(max_tokens=-1), "max_tokens"),
        (chat_body(stream="yes"), "stream"),
    ],
)
async def test_wrong_types_are_400_with_param(
    sim: SimulatedProvider, body: dict[str, Any], param: str
) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        response = await proxy.client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = assert_openai_error(response.json())
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_non_object_body_is_400(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        response = await proxy.client.post("/v1/embeddings", json=[1, 2, 3])
    assert response.status_code == 400
    assert_openai_error(response.json())


async def test_unknown_model_is_404_model_not_found(sim: SimulatedProvider) -> None:
    config = make_config([{"key": KEY_A}], provider={"models": ["gpt-4o-mini"]})
    async with running_proxy(config, sim) as proxy:
        response = await proxy.client.post(
            "/v1/chat/completions", json={**chat_body(), "model": "gpt-nonexistent"}
        )
    assert response.status_code == 404
    error = assert_openai_error(response.json())
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


async def test_body_over_the_limit_is_413_before_parsing(sim: SimulatedProvider) -> None:
    config = make_config([{"key": KEY_A}], server={"max_body_bytes": 2048})
    big = chat_body("x" * 4096)
    async with running_proxy(config, sim) as proxy:
        declared = await proxy.client.post("/v1/chat/completions", json=big)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
            for _ in range(8):
                yield b"y" * 512
            yield b'"}]}'

        streamed = await proxy.client.post("/v1/chat/completions", content=chunks())
        management = await proxy.client.post(
            "/api/v1/providers", content=b"{" + b" " * 4096 + b"}", headers={"x": "y"}
        )
        small = await proxy.chat()
    for response in (declared, streamed, management):
        assert response.status_code == 413
        assert assert_openai_error(response.json())["code"] == "request_too_large"
    assert small.status_code == 200


async def test_chunked_oversized_management_body_is_413(sim: SimulatedProvider) -> None:
    config = make_config([{"key": KEY_A}], server={"max_body_bytes": 1024})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512

    async with running_proxy(config, sim) as proxy:
        response = await proxy.client.post(
            "/api/v1/keys", content=chunks(), headers={"Authorization": "Bearer x"}
        )
    assert response.status_code == 413
    assert assert_openai_error(response.json())["code"] == "request_too_large"


async def test_no_key_can_serve_is_429_with_integer_retry_after(sim: SimulatedProvider) -> None:
    sim.inject_fault("a", "status_429", count=-1, retry_after_s=6.2)
    sim.inject_fault("b", "status_429", count=-1, retry_after_s=9)
    config = make_config([{"id": "a", "key": KEY_A}, {"id": "b", "key": KEY_B}])
    async with running_proxy(config, sim) as proxy:
        first = await proxy.chat()
        again = await proxy.chat()  # both keys cooling down: refused without calling upstream
    for response in (first, again):
        assert response.status_code == 429
        error = assert_openai_error(response.json())
        assert error["type"] == "rate_limit_error"
        retry_after = int(response.headers["retry-after"])
        assert 6 <= retry_after <= 10
    assert first.headers["x-apikeyrouter-attempts"] == "2"
    assert sim.key_stats("a").received == 1


async def test_proxy_side_limit_refuses_with_retry_after(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A, "requests_per_minute": 1}])
    async with running_proxy(config, sim) as proxy:
        assert (await proxy.chat()).status_code == 200
        refused = await proxy.chat()
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 61  # 60 s window, rounded up


async def test_every_provider_down_is_503(sim: SimulatedProvider) -> None:
    sim.inject_fault("a", "status_500", count=-1)
    sim.inject_fault("b", "status_503", count=-1)
    config = make_config([{"id": "a", "key": KEY_A}, {"id": "b", "key": KEY_B}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.chat()
    assert response.status_code == 503
    error = assert_openai_error(response.json())
    assert error["code"] == "providers_unavailable"


async def test_upstream_400_is_passed_through(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.client.post(
            "/v1/embeddings",
            json={"model": "text-embedding-3-small", "input": "hi", "dimensions": 0},
        )
    assert response.status_code == 400
    error = assert_openai_error(response.json())
    assert error["param"] == "dimensions"
    assert error["type"] == "invalid_request_error"
    assert response.headers["x-apikeyrouter-key-id"] == "a"
    assert sim.key_stats("a").received == 1  # a caller's error is not retried on other keys


async def test_all_keys_invalid_is_429_without_retry_after(sim: SimulatedProvider) -> None:
    config = make_config([{"id": "bad", "key": KEY_BAD}])
    async with running_proxy(config, sim) as proxy:
        response = await proxy.chat()
    assert response.status_code == 429
    assert "retry-after" not in response.headers  # an invalid key does not heal by itself
    assert_openai_error(response.json())


async def test_wrong_method_is_405(sim: SimulatedProvider) -> None:
    async with running_proxy(make_config([{"key": KEY_A}]), sim) as proxy:
        response = await proxy.client.get("/v1/chat/completions")
        models = await proxy.client.post("/v1/models", json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert models.status_code == 405
    assert_openai_error(response.json())


class ExplodingTransport(HttpTransport):
    """An upstream client with a bug: raises something nobody expects, mentioning a secret."""

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        raise RuntimeError("kaboom while holding sk-live-SECRETSECRETSECRET")

    async def open_stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpStreamResponse:
        raise RuntimeError("kaboom while holding sk-live-SECRETSECRETSECRET")

    async def close(self) -> None:
        return None


async def test_unexpected_error_is_a_generic_500_logged_redacted(
    sim: SimulatedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="apikeyrouter")
    config = make_config([{"id": "a", "key": KEY_A}])
    async with running_proxy(config, sim, transport=ExplodingTransport()) as proxy:
        response = await proxy.client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-request-id": "trace-me"}
        )
        streamed = await proxy.chat(stream=True)
    assert response.status_code == 500
    error = assert_openai_error(response.json())
    assert error["code"] == "internal_error"
    assert "trace-me" in error["message"]
    for leaked in ("kaboom", "Traceback", "RuntimeError", "SECRET"):
        assert leaked not in response.text
    assert streamed.status_code == 500
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "trace-me" in logged
    assert "RuntimeError" in logged
    assert "SECRETSECRET" not in logged
