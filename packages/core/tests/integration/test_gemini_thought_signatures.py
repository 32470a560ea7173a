"""Gemini 3 function calling through the router: a thought signature survives the round trip
through the OpenAI format, and a history Gemini did not write still goes through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from apikeyrouter import ApiKeyRouter
from apikeyrouter.infrastructure.adapters.gemini_translation import FOREIGN_THOUGHT_SIGNATURE
from apikeyrouter.testing import TOOL_TRIGGER
from apikeyrouter.testing.simulator.gemini_wire import thought_signature

from .conftest import FakeClock
from .provider_env import (
    WEATHER_TOOL,
    ProviderEnv,
    add_key,
    make_router,
    register_three_providers,
    start_env,
)

GEMINI_3 = "gemini-3.5-flash"
QUESTION = {"role": "user", "content": f"What is the {TOOL_TRIGGER} in Paris?"}


@pytest.fixture
def env() -> Iterator[ProviderEnv]:
    yield from start_env()


@pytest.fixture
async def router(env: ProviderEnv, clock: FakeClock) -> AsyncIterator[ApiKeyRouter]:
    instance = make_router(clock)
    await register_three_providers(instance, env, clock)
    yield instance
    await instance.close()


def follow_up(assistant: dict[str, Any]) -> dict[str, Any]:
    """The next step of the conversation: the call's result goes back with the history."""
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'}
        for call in assistant["tool_calls"]
    ]
    return {
        "model": GEMINI_3,
        "messages": [QUESTION, assistant, *results],
        "tools": [WEATHER_TOOL],
    }


async def test_a_gemini_3_tool_step_keeps_its_signature_through_the_openai_format(
    env: ProviderEnv, router: ApiKeyRouter
) -> None:
    key = await add_key(env, router, "gemini", "sig")
    first = await router.route({"model": GEMINI_3, "messages": [QUESTION], "tools": [WEATHER_TOOL]})
    assistant = first.body["choices"][0]["message"]
    (call,) = assistant["tool_calls"]
    signature = thought_signature("get_weather")
    assert call["extra_content"] == {"google": {"thought_signature": signature}}

    second = await router.route(follow_up(assistant))
    assert second.body["choices"][0]["finish_reason"] == "stop"
    sent = env.provider.requests_for(key.secret)[-1].json()
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == signature

    # The simulator, like Gemini 3, refuses the same step with the signature dropped in transit;
    # the router then sends Google's stand-in, so a caller that drops it still gets an answer.
    bare = {**assistant, "tool_calls": [{k: v for k, v in call.items() if k != "extra_content"}]}
    third = await router.route(follow_up(bare))
    assert third.body["choices"][0]["finish_reason"] == "stop"
    sent = env.provider.requests_for(key.secret)[-1].json()
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == FOREIGN_THOUGHT_SIGNATURE


async def test_a_tool_step_another_provider_wrote_continues_on_gemini_3(
    env: ProviderEnv, router: ApiKeyRouter
) -> None:
    await add_key(env, router, "gemini", "gm")
    written_by_openai = {  # OpenAI's shape: no signature anywhere
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_Xb2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            }
        ],
    }
    reply = await router.route(follow_up(written_by_openai))
    assert reply.provider_id == "gemini"
    assert reply.body["choices"][0]["finish_reason"] == "stop"
