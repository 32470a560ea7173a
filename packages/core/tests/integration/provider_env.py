"""Shared pieces for the cross-provider tests: a simulator that records what it received, and a
router with OpenAI, Anthropic and Gemini adapters all pointed at one simulator thread server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from apikeyrouter import APIKey, ApiKeyRouter, RetryPolicy
from apikeyrouter.domain.interfaces.state_store import CircuitPolicy
from apikeyrouter.infrastructure.adapters.anthropic_adapter import AnthropicAdapter
from apikeyrouter.infrastructure.adapters.gemini_adapter import GeminiAdapter
from apikeyrouter.infrastructure.adapters.openai_adapter import OpenAIAdapter
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider, SimulatorServer
from apikeyrouter.testing.simulator.asgi import Message, Receive, Scope, Send

from tests.fake_clock import FakeClock

OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")
ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")
GEMINI_MODELS = ("gemini-2.5-flash", "gemini-3.5-flash", "text-embedding-004")

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@dataclass(frozen=True, slots=True)
class Received:
    """One HTTP request as the simulator saw it (headers lower-cased)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    @property
    def wire_format(self) -> str:
        """Which of the three wire formats the request spoke, judged from path and auth."""
        if self.path.startswith("/v1beta/"):
            return "gemini"
        if self.path.startswith("/v1/messages"):
            return "anthropic"
        return "openai"

    @property
    def credential(self) -> str | None:
        """The key the request carried, whichever way its format sends it."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        if "x-goog-api-key" in self.headers:
            return self.headers["x-goog-api-key"]
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth else None

    def json(self) -> dict[str, Any]:
        value = orjson.loads(self.body)
        assert isinstance(value, dict)
        return value


class RecordingProvider(SimulatedProvider):
    """The simulated provider, also keeping every request it received (list appends are atomic,
    so the server thread and the test thread can share the list)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.received: list[Received] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        parts: list[bytes] = []
        replay: list[Message] = []
        while True:
            message = await receive()
            replay.append(message)
            if message["type"] != "http.request":
                break
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.received.append(
            Received(
                method=scope["method"],
                path=scope["path"],
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=b"".join(parts),
            )
        )

        async def replayed() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        await super().__call__(scope, replayed, send)

    def requests_for(self, credential: str) -> list[Received]:
        return [r for r in self.received if r.credential == credential]


@dataclass
class ProviderEnv:
    """One simulator server and the base URLs of its three wire formats."""

    provider: RecordingProvider
    server: SimulatorServer


def start_env() -> Iterator[ProviderEnv]:
    from apikeyrouter.testing import run_simulator_in_thread

    provider = RecordingProvider(seed=1)
    with run_simulator_in_thread(provider) as server:
        yield ProviderEnv(provider, server)


def make_router(
    clock: FakeClock, *, max_attempts: int = 8, failure_threshold: int = 2
) -> ApiKeyRouter:
    """Failover without backoff sleeps, circuits that open after ``failure_threshold``."""
    return ApiKeyRouter(
        clock=clock,
        retry_policy=RetryPolicy(
            max_attempts=max_attempts,
            deadline_seconds=10.0,
            attempt_timeout_seconds=3.0,
            backoff_base_seconds=0.0,
        ),
        circuit_policy=CircuitPolicy(failure_threshold=failure_threshold, open_seconds=30.0),
    )


async def register_three_providers(
    router: ApiKeyRouter, env: ProviderEnv, clock: FakeClock
) -> None:
    server = env.server
    await router.register_provider(
        "openai", OpenAIAdapter(server.base_url, clock=clock), models=OPENAI_MODELS
    )
    await router.register_provider(
        "anthropic",
        AnthropicAdapter(server.anthropic_base_url, clock=clock),
        models=ANTHROPIC_MODELS,
    )
    await router.register_provider(
        "gemini", GeminiAdapter(server.gemini_base_url, clock=clock), models=GEMINI_MODELS
    )


_SECRET_PREFIX = {"anthropic": "sk-ant-test-", "gemini": "AIzaTEST", "openai": "sk-test-"}


@dataclass(frozen=True, slots=True)
class SimKey:
    """A key known to both sides: the simulator (by ``label``) and the router (``key``)."""

    label: str
    secret: str
    key: APIKey

    @property
    def id(self) -> str:
        return self.key.id


async def add_key(
    env: ProviderEnv,
    router: ApiKeyRouter,
    provider_id: str,
    label: str,
    *,
    weight: float = 1.0,
    **sim_options: Any,
) -> SimKey:
    """Configure ``label`` on the simulator and register the same secret with the router."""
    prefix = _SECRET_PREFIX.get(provider_id, "sk-test-")
    secret = f"{prefix}{label}-".ljust(39, "0")
    env.provider.add_key(SimKeyConfig(key=secret, label=label, **sim_options))
    key = await router.register_key(secret, provider_id, weight=weight)
    return SimKey(label, secret, key)
