"""A Gemini key canary: whatever happens to a request (success, 401, 429, 500, a 400, streams
that finish, drop or error, embeddings, model listing) the key never shows up in a URL, a log
line, an exception, a decision or the audit trail, not even as an 8-character piece. The
upstream here is hostile: every error it sends echoes the key back in its message."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from apikeyrouter import APIKey, ApiKeyRouter, ApiKeyRouterError, Endpoint, KeyState
from apikeyrouter.infrastructure.observability.logger import LOGGER_NAME, configure_logging
from apikeyrouter.testing import TOOL_TRIGGER, SimKeyConfig
from apikeyrouter.testing.simulator.asgi import Message, Receive, Scope, Send

from tests.fake_clock import FakeClock

from .provider_env import (
    WEATHER_TOOL,
    ProviderEnv,
    RecordingProvider,
    make_router,
    register_three_providers,
)

CANARY = "AIzaCANARYq7Xw2Lk9Vp4Zt8Rm3Hs6Jb1Nd5FgY"
PIECE = 8


def pieces(secret: str) -> list[str]:
    return [secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)]


class EchoingProvider(RecordingProvider):
    """Answers like the simulator, except that every Gemini error message (replies and stream
    error events alike) quotes the caller's key back, as careless gateways do."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or ())
        key = headers.get(b"x-goog-api-key")
        if scope["type"] != "http" or not scope["path"].startswith("/v1beta/") or key is None:
            await super().__call__(scope, receive, send)
            return
        echo = b'"message":"API key ' + key + b" was refused: "
        held: Message | None = None

        async def echoing(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message  # sent with the first body part, once its length is known
                return
            if message["type"] == "http.response.body":
                body = bytes(message.get("body", b"")).replace(b'"message":"', echo)
                message = {**message, "body": body}
                if held is not None:
                    start = [(k, v) for k, v in held["headers"] if k != b"content-length"]
                    if not message.get("more_body", False):
                        start.append((b"content-length", str(len(body)).encode()))
                    await send({**held, "headers": start})
                    held = None
            await send(message)

        await super().__call__(scope, receive, echoing)


def state_of(key: APIKey) -> KeyState:
    return key.state  # read anew each time (the router changes it as calls go)


@dataclass
class Transcript:
    """Everything the canary could have leaked into."""

    logs: str = ""
    errors: list[BaseException] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # decisions, attempts, audit, key views

    def error_texts(self) -> list[str]:
        texts = []
        for error in self.errors:
            texts += [str(error), repr(error), str(error.args)]
            if isinstance(error, ApiKeyRouterError):
                texts.append(orjson.dumps(error.to_openai_error()).decode())
        return texts


@pytest.fixture
def env() -> Iterator[ProviderEnv]:
    from apikeyrouter.testing import run_simulator_in_thread

    provider = EchoingProvider(seed=3)
    with run_simulator_in_thread(provider) as server:
        yield ProviderEnv(provider, server)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    buffer = io.StringIO()
    configure_logging("DEBUG", buffer)
    yield buffer
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
async def transcript(env: ProviderEnv, clock: FakeClock, captured_logs: io.StringIO) -> Transcript:
    """Run the canary through every kind of outcome once and collect what came out."""
    router = make_router(clock)
    await register_three_providers(router, env, clock)
    try:
        out = await run_scenario(router, env, clock)
    finally:
        await router.close()
    out.logs = captured_logs.getvalue()
    return out


async def run_scenario(router: ApiKeyRouter, env: ProviderEnv, clock: FakeClock) -> Transcript:
    provider = env.provider
    provider.add_key(SimKeyConfig(key=CANARY, label="canary"))
    provider.add_key(SimKeyConfig(key="sk-test-openai-spare-0000000000001", label="spare"))
    canary = await router.register_key(CANARY, "gemini")
    spare = await router.register_key("sk-test-openai-spare-0000000000001", "openai")
    router.add_model_group("g", ["gemini/gemini-2.5-flash", "openai/gpt-4o"])
    out = Transcript()

    def chat(text: str, model: str = "g", **extra: object) -> dict[str, object]:
        return {"model": model, "messages": [{"role": "user", "content": text}], **extra}

    async def attempt_route(body: dict[str, object], endpoint: Endpoint = Endpoint.CHAT) -> None:
        try:
            response = await router.route(body, endpoint=endpoint)
        except ApiKeyRouterError as exc:
            out.errors.append(exc)
            return
        out.records.append(response.model_dump_json())

    async def attempt_stream(body: dict[str, object]) -> None:
        try:
            stream = await router.open_stream(body)
        except ApiKeyRouterError as exc:
            out.errors.append(exc)
            return
        out.records.append(stream.decision.model_dump_json())
        try:
            async for chunk in stream.chunks():
                out.records.append(orjson.dumps(chunk).decode())
        except ApiKeyRouterError as exc:
            out.errors.append(exc)
        out.records.append(orjson.dumps([a.model_dump() for a in stream.attempts]).decode())

    # Successes: chat, a tool call, a stream, embeddings, model listing.
    await attempt_route(chat("plain success"))
    await attempt_route(chat(f"the {TOOL_TRIGGER} in Paris", tools=[WEATHER_TOOL]))
    await attempt_stream(chat("a stream that finishes"))
    await attempt_route(
        {"model": "text-embedding-004", "input": ["one", "two"]}, endpoint=Endpoint.EMBEDDINGS
    )
    models = await router.adapter("gemini").list_models(CANARY, 5.0)
    out.records.append(orjson.dumps(models if isinstance(models, list) else str(models)).decode())

    # A 400 the caller gets back (temperature out of range for Gemini).
    await attempt_route(chat("bad request", model="gemini-2.5-flash", temperature=5))
    # 429: throttled, served by OpenAI; then 500 twice: the circuit opens.
    provider.inject_fault("canary", "status_429", count=1, retry_after_s=3)
    await attempt_route(chat("rate limited"))
    assert state_of(canary) is KeyState.THROTTLED
    clock.advance(3.01)
    provider.inject_fault("canary", "status_500", count=2)
    await attempt_route(chat("server error one"))
    await attempt_route(chat("server error two"))
    clock.advance(31.0)
    # Streams: refused before the first byte, then broken after output both ways.
    provider.inject_fault("canary", "status_500", count=1)
    await attempt_stream(chat("stream refused"))
    clock.advance(31.0)
    provider.inject_fault("canary", "drop_stream", count=1, after_chunks=2)
    await attempt_stream(chat("stream dropped", model="gemini-2.5-flash"))
    clock.advance(31.0)
    provider.inject_fault("canary", "stream_error", count=1, after_chunks=2)
    await attempt_stream(chat("stream errored", model="gemini-2.5-flash"))
    clock.advance(31.0)
    # 401: the key is marked invalid; afterwards nobody can serve Gemini.
    provider.inject_fault("canary", "status_401", count=1)
    await attempt_route(chat("revoked", model="gemini-2.5-flash"))
    assert state_of(canary) is KeyState.INVALID
    await attempt_route(chat("after revocation", model="gemini-2.5-flash"))
    await attempt_stream(chat("stream after revocation", model="gemini-2.5-flash"))

    for key in (canary, spare):
        out.records += [t.model_dump_json() for t in await router.store.list_audit(key.id)]
        out.records += [key.model_dump_json(), repr(key), str(key)]
        out.records.append(orjson.dumps(router.stats(key.id), default=repr).decode())
        out.records.append((await router.quota_state(key.id)).model_dump_json())
    out.records.append(orjson.dumps(router.keys.list_redacted()).decode())
    out.records += [repr(router), repr(router.adapter("gemini"))]
    return out


def test_every_kind_of_outcome_happened(env: ProviderEnv, transcript: Transcript) -> None:
    """The scenario really exercised the canary, so the absence checks below mean something."""
    stats = env.provider.key_stats("canary")
    assert stats.served >= 4
    assert stats.status_429 == 1
    assert stats.status_401 == 1
    assert stats.status_5xx == 3
    assert stats.status_4xx == 1
    assert stats.dropped == 1
    assert stats.stream_errors == 1
    kinds = {type(e).__name__ for e in transcript.errors}
    assert {"UpstreamError", "StreamInterruptedError", "NoKeyAvailableError"} <= kinds
    echoed = [r for r in env.provider.received if r.credential == CANARY]
    assert len(echoed) == stats.received
    assert "attempt_failed" in transcript.logs
    assert "redacted" in transcript.logs  # the echo was there, and was scrubbed
    upstream = [e for e in transcript.errors if type(e).__name__ == "UpstreamError"]
    assert upstream
    assert "[redacted]" in str(upstream[0])  # the upstream's echo, scrubbed


def test_canary_never_in_a_url(env: ProviderEnv, transcript: Transcript) -> None:
    assert env.provider.key_stats("canary").key_in_url == 0
    gemini = [r for r in env.provider.received if r.path.startswith("/v1beta/")]
    assert gemini
    for request in gemini:
        assert request.headers["x-goog-api-key"] == CANARY  # where it belongs, and only there
        assert "key=" not in request.query
        for piece in pieces(CANARY):
            assert piece not in request.url
            assert piece not in request.body.decode()


def test_canary_never_in_a_log_line(transcript: Transcript) -> None:
    lines = transcript.logs.splitlines()
    assert lines
    for line in lines:
        orjson.loads(line)  # JSON lines, every one
        for piece in pieces(CANARY):
            assert piece not in line, line


def test_canary_never_in_an_exception(transcript: Transcript) -> None:
    assert transcript.errors
    for text in transcript.error_texts():
        for piece in pieces(CANARY):
            assert piece not in text, text


def test_canary_never_in_decisions_or_audit(transcript: Transcript) -> None:
    assert transcript.records
    for record in transcript.records:
        for piece in pieces(CANARY):
            assert piece not in record, record
