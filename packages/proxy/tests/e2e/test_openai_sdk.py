"""The proxy as a real process, driven by the official ``openai`` SDK (sync and async)."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from .conftest import BUSY_MODEL, CLIENT_KEY, ProxyProcess

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello to the proxy."}
]


@pytest.fixture
def client(proxy: ProxyProcess) -> OpenAI:
    return OpenAI(base_url=proxy.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.fixture
def async_client(proxy: ProxyProcess) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=proxy.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def test_chat_with_routing_headers(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=12,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert raw.headers["x-apikeyrouter-key-id"] == "primary"
    assert raw.headers["x-apikeyrouter-provider"] == "main"
    assert raw.headers["x-request-id"].startswith("req_")


def test_failover_is_visible_in_response_headers(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=MESSAGES,
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-apikeyrouter-key-id"] == "good"
    assert raw.headers["x-apikeyrouter-provider"] == "failover"
    assert raw.headers["x-apikeyrouter-attempts"] == "2"  # "invalid" was tried first


def test_streaming_delivers_all_chunks_and_final_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Simulated reply")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )


def test_completions_embeddings_and_models(client: OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.choices[0].text
    embeddings = client.embeddings.create(model="text-embedding-3-small", input=["a", "b", "c"])
    assert len(embeddings.data) == 3
    assert all(len(item.embedding) > 0 for item in embeddings.data)
    models = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "gpt-4o", BUSY_MODEL} <= models
    assert client.models.retrieve("gpt-4o-mini").owned_by == "main"


def test_sdk_exceptions_map_from_statuses(proxy: ProxyProcess, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=-5,
        )
    assert bad.value.status_code == 400
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["param"] == "max_tokens"

    stranger = OpenAI(base_url=proxy.url + "/v1", api_key="not-a-client-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        stranger.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert denied.value.status_code == 401

    with pytest.raises(openai.RateLimitError) as throttled:
        client.chat.completions.create(model=BUSY_MODEL, messages=MESSAGES)
    assert throttled.value.status_code == 429
    assert int(throttled.value.response.headers["retry-after"]) >= 1

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert missing.value.code == "model_not_found"


async def test_async_client(async_client: AsyncOpenAI) -> None:
    raw = await async_client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-apikeyrouter-key-id"] == "primary"
    stream = await async_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage_seen = False
    async for chunk in stream:
        pieces.extend(c.delta.content or "" for c in chunk.choices)
        usage_seen = usage_seen or chunk.usage is not None
    assert "".join(pieces)
    assert usage_seen
    embedding = await async_client.embeddings.create(model="text-embedding-3-small", input="x")
    assert embedding.data[0].embedding
    with pytest.raises(openai.RateLimitError):
        await async_client.chat.completions.create(model=BUSY_MODEL, messages=MESSAGES)
    await async_client.close()
