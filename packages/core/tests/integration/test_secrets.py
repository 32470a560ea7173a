"""A planted canary key must never surface: not in logs, errors, reprs or returned data."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from apikeyrouter import ApiKeyRouter, NoKeyAvailableError, OpenAIAdapter
from apikeyrouter.infrastructure.observability.logger import LOGGER_NAME, configure_logging
from apikeyrouter.testing import SimKeyConfig

from .conftest import SimEnv, chat

CANARY = "sk-CANARY-5e9c1f0a7d3b4c2e8f6a"


def assert_no_canary(text: str) -> None:
    # Not the key, and not any 8-character piece of it (masked echoes included).
    for start in range(len(CANARY) - 7):
        piece = CANARY[start : start + 8]
        assert piece not in text, f"canary fragment {piece!r} leaked in: {text[:300]}"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    yield stream
    logging.getLogger(LOGGER_NAME).handlers.clear()


async def test_canary_key_never_leaks(sim: SimEnv, captured_logs: io.StringIO) -> None:
    sim.provider.add_key(SimKeyConfig(key=CANARY, invalid=True, label="canary"))
    router = ApiKeyRouter()
    await router.register_provider("openai", OpenAIAdapter(sim.base_url))
    key = await router.register_key(CANARY, "openai")
    texts = [repr(key), str(key), key.model_dump_json(), str(key.redacted()), repr(router)]

    with pytest.raises(NoKeyAvailableError) as caught:
        await router.route(chat())
    texts += [str(caught.value), repr(caught.value), str(caught.value.to_openai_error())]

    # A second, healthy key: the canary's failure is logged while the request succeeds.
    sim.provider.add_key(SimKeyConfig(key="sk-test-healthy00001", label="ok"))
    await router.register_key("sk-test-healthy00001", "openai")
    await router.keys.set_state(key.id, key.state.AVAILABLE, "operator re-enabled", actor="test")
    response = await router.route(chat())
    texts += [response.model_dump_json(), response.decision.model_dump_json()]
    texts += [t.model_dump_json() for t in await router.store.list_audit()]
    texts += [d.model_dump_json() for d in await router.store.recent_decisions()]
    texts += router.keys.list_redacted().__repr__().splitlines()
    await router.close()

    logs = captured_logs.getvalue()
    assert "attempt_failed" in logs  # the failure was logged...
    assert key.id in logs  # ...by key id
    texts.append(logs)
    for text in texts:
        assert_no_canary(text)
    # The material is stored encrypted, and decrypts back only through the key manager.
    assert CANARY not in key.encrypted_material
    assert router.keys.secret(key) == CANARY
