"""The app factory: ``create_app(config)`` and the module-level ``app`` for ``uvicorn``.

The app is a FastAPI application (management API, OpenAPI docs at ``/docs``, health, metrics)
whose HTTP entry point is the :class:`Gateway`: ``/v1`` requests are dispatched from there to
lean ASGI handlers before FastAPI's stack runs. Measured on the development machine, the same
handler reached through Starlette's middleware stack and router costs noticeably more per
request (see ``docs/proxy.md``); the gateway keeps request ids, the body limit, the error
safety net, the access log and metrics identical on both paths.

``app`` is built lazily on first access from ``APIKEYROUTER_CONFIG`` (a YAML path) or, without
it, from defaults plus ``APIKEYROUTER_*`` variables: importing this module has no side effects.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.infrastructure.transport.base import HttpTransport
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter

from apikeyrouter_proxy import __version__
from apikeyrouter_proxy.api import health, metrics
from apikeyrouter_proxy.api.management import include_management_api
from apikeyrouter_proxy.api.v1 import hot_routes
from apikeyrouter_proxy.api.v1.models import MODEL_PREFIX
from apikeyrouter_proxy.api.v1.raw import RAW_PREFIX, RAW_ROUTE, RawEndpoint
from apikeyrouter_proxy.asgi_types import Receive, Scope, Send
from apikeyrouter_proxy.config.loader import config_from_environment, load_config
from apikeyrouter_proxy.config.settings import ProxyConfig
from apikeyrouter_proxy.middleware.error_handler import install_error_handlers
from apikeyrouter_proxy.middleware.gateway import Gateway
from apikeyrouter_proxy.services.config_watcher import ConfigWatcher
from apikeyrouter_proxy.services.gc_tuning import GcState, restore_gc, tune_gc
from apikeyrouter_proxy.services.runtime import ProxyRuntime

__all__ = ["ProxyApp", "create_app", "lifespan"]


class ProxyApp(FastAPI):
    """FastAPI whose HTTP traffic enters through the gateway (lifespan goes to FastAPI)."""

    gateway: Gateway
    runtime: ProxyRuntime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.gateway(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the runtime (register providers and keys) and the config watcher; stop both.

    In-process tests that bypass a server run it themselves: ``async with lifespan(app):``.
    """
    runtime: ProxyRuntime = app.state.runtime
    await runtime.start()
    watcher: ConfigWatcher | None = None
    if runtime.config_path is not None and runtime.config.server.watch_config:
        watcher = ConfigWatcher(runtime, runtime.config_path)
        app.state.config_watcher = watcher
        watcher.start()
    gc_state: GcState | None = None
    if runtime.manage_gc and runtime.config.server.gc_threshold:
        gc_state = tune_gc(runtime.config.server.gc_threshold)
    try:
        yield
    finally:
        if gc_state is not None:
            restore_gc(gc_state)
        if watcher is not None:
            await watcher.stop()
        await runtime.close()


def create_app(
    config: ProxyConfig | str | Path | None = None,
    *,
    config_path: str | Path | None = None,
    store: StateStore | None = None,
    transport: HttpTransport | None = None,
    span_exporter: SpanExporter | None = None,
    manage_log_level: bool = False,
    manage_gc: bool = False,
) -> ProxyApp:
    """Build the proxy.

    ``config`` is a :class:`ProxyConfig` or a YAML path (then watched for changes); ``None``
    reads the environment like the module-level ``app``. ``store`` and ``transport`` replace
    the in-memory state store and the shared aiohttp upstream client (tests pass an in-process
    transport to a simulated provider); ``span_exporter`` turns tracing on with that exporter.
    ``manage_log_level`` lets the config's ``logging.level`` set the process's log level (the
    CLI does; a library embedding the app usually owns logging itself). ``manage_gc`` applies
    ``server.gc_threshold`` to the interpreter's garbage collector while the app runs (the CLI
    does; see :mod:`apikeyrouter_proxy.services.gc_tuning`).
    """
    path = Path(config_path) if config_path is not None else None
    if config is None:
        config, path = config_from_environment()
    elif isinstance(config, str | Path):
        path = Path(config)
        config = load_config(path)
    runtime = ProxyRuntime(
        config,
        config_path=path,
        store=store,
        transport=transport,
        span_exporter=span_exporter,
        manage_log_level=manage_log_level,
    )
    runtime.manage_gc = manage_gc
    app = ProxyApp(
        title="apikeyrouter proxy",
        version=__version__,
        summary="OpenAI-compatible gateway: many API keys, one endpoint.",
        description=(
            "The OpenAI-compatible endpoints (`/v1/chat/completions`, `/v1/completions`, "
            "`/v1/embeddings`, `/v1/models`, `/v1/raw/{model}`) are served by lean ASGI "
            "handlers and are not listed here. This document covers the management API (admin "
            "token required), health probes and metrics."
        ),
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.runtime = runtime
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    include_management_api(app)
    models = hot_routes(runtime)
    app.gateway = Gateway(
        runtime,
        functools.partial(FastAPI.__call__, app),
        models,
        prefixed=(
            (MODEL_PREFIX, MODEL_PREFIX + "{model}", models["/v1/models"]),
            (RAW_PREFIX, RAW_ROUTE, RawEndpoint(runtime)),
        ),
    )
    return app


@functools.cache
def _app_from_environment() -> ProxyApp:
    return create_app(None, manage_log_level=True, manage_gc=True)


def app_factory() -> ProxyApp:
    """For ``uvicorn --factory apikeyrouter_proxy.main:app_factory`` (and the CLI)."""
    return create_app(None, manage_log_level=True, manage_gc=True)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
