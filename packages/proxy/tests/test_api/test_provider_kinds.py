"""``kind: anthropic`` and ``kind: gemini`` providers behind the same OpenAI-shaped ``/v1``."""

from __future__ import annotations

import orjson
import pytest
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter_proxy.config import ProxyConfig

from .conftest import KEY_A
from .support import ADMIN, chat_body, running_proxy, sse_events

CASES = [
    ("anthropic", "http://sim.test", "claude-sonnet-4-5"),
    ("gemini", "http://sim.test/v1beta", "gemini-2.5-flash"),
]


@pytest.mark.parametrize(("kind", "base_url", "model"), CASES)
async def test_translated_providers_answer_in_openai_shape(
    sim: SimulatedProvider, kind: str, base_url: str, model: str
) -> None:
    config = ProxyConfig.model_validate(
        {
            "server": {"admin_token": "admin-token-for-tests", "watch_config": False},
            "providers": [
                {
                    "id": kind,
                    "kind": kind,
                    "base_url": base_url,
                    "models": [model],
                    "keys": [{"id": "k", "key": KEY_A}],
                }
            ],
        }
    )
    async with running_proxy(config, sim) as proxy:
        plain = await proxy.client.post(
            "/v1/chat/completions", json={**chat_body("hi"), "model": model}
        )
        streamed = await proxy.client.post(
            "/v1/chat/completions", json={**chat_body("hi"), "model": model, "stream": True}
        )
        providers = await proxy.client.get("/api/v1/providers", headers=ADMIN)
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert plain.headers["x-apikeyrouter-provider"] == kind
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    assert all(orjson.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])
    assert providers.json()[0]["kind"] == kind
