"""Shared test helpers: configs, an in-process proxy over a simulated provider, SSE parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
)
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter_proxy.config import ProxyConfig
from apikeyrouter_proxy.main import ProxyApp, create_app, lifespan
from apikeyrouter_proxy.services.runtime import ProxyRuntime
from opentelemetry.sdk.trace.export import SpanExporter

ADMIN_TOKEN = "admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SIM_BASE = "http://sim.test/v1"


def chat_body(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def make_config(
    keys: list[dict[str, Any]],
    *,
    provider: Mapping[str, Any] | None = None,
    **sections: Any,
) -> ProxyConfig:
    """One OpenAI-compatible provider ("sim") with ``keys``, plus any other sections."""
    data: dict[str, Any] = {
        "server": {"admin_token": ADMIN_TOKEN, "watch_config": False},
        "routing": {"backoff_base_seconds": 0.0, "attempt_timeout_seconds": 5.0},
        "providers": [{"id": "sim", "base_url": SIM_BASE, "keys": keys, **(provider or {})}],
    }
    for name, value in sections.items():
        current = data.get(name)
        data[name] = {**current, **value} if isinstance(current, dict) else value
    return ProxyConfig.model_validate(data)


class RecordingTransport(HttpTransport):
    """Passes calls to another transport and remembers each request body sent upstream."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []

    def _record(self, body: bytes | None) -> None:
        if body:
            self.bodies.append(orjson.loads(body))

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        self._record(body)
        return await self.inner.request(method, url, headers, body, timeout)

    async def open_stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpStreamResponse:
        self._record(body)
        return await self.inner.open_stream(method, url, headers, body, timeout)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Proxy:
    app: ProxyApp
    client: httpx.AsyncClient
    transport: HttpTransport
    logs: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> ProxyRuntime:
        return self.app.runtime

    async def chat(self, **kwargs: Any) -> httpx.Response:
        return await self.client.post("/v1/chat/completions", json=chat_body(**kwargs))


@asynccontextmanager
async def running_proxy(
    config: ProxyConfig,
    sim: SimulatedProvider,
    *,
    transport: HttpTransport | None = None,
    span_exporter: SpanExporter | None = None,
) -> AsyncIterator[Proxy]:
    """The proxy app in process (lifespan started), its upstream the simulator in process."""
    upstream = transport if transport is not None else ASGITransport(sim)
    app = create_app(config, transport=upstream, span_exporter=span_exporter)
    async with lifespan(app):
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
        )
        async with client:
            yield Proxy(app, client, upstream)


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
