"""An OpenAI-format upstream's answer reaches the caller byte for byte (translated ones are
covered by test_provider_kinds)."""

from __future__ import annotations

from collections.abc import Mapping

from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
)
from apikeyrouter.testing import SimulatedProvider

from .conftest import KEY_A
from .support import chat_body, make_config, running_proxy

#: Spacing, key order and a field the proxy knows nothing about, as an upstream might send them.
UPSTREAM_BODY = (
    b'{ "usage" : {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},\n'
    b'  "id": "chatcmpl-odd", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",'
    b' "choices": [{"index": 0, "message": {"role": "assistant", "content": "caf\\u00e9"},'
    b' "finish_reason": "stop"}], "x_vendor": {"n": 1.50} }'
)


class FixedReply(HttpTransport):
    """Answers every request with ``UPSTREAM_BODY``."""

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        return HttpResponse(200, {"content-type": "application/json"}, UPSTREAM_BODY)

    async def open_stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpStreamResponse:
        raise AssertionError("no stream in this test")

    async def close(self) -> None:
        return None


async def test_an_openai_format_answer_is_passed_on_byte_for_byte(sim: SimulatedProvider) -> None:
    config = make_config([{"key": KEY_A}])
    async with running_proxy(config, sim, transport=FixedReply()) as proxy:
        response = await proxy.client.post("/v1/chat/completions", json=chat_body())
        usage = proxy.runtime.router.keys.list_keys()[0].usage
    assert response.status_code == 200
    assert response.content == UPSTREAM_BODY
    assert response.headers["content-length"] == str(len(UPSTREAM_BODY))
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 2)  # still parsed for usage
