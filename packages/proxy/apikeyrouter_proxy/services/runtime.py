"""Everything a request needs, in one object that a config reload updates in place.

Handlers read ``runtime.clients``, ``runtime.max_body_bytes`` and friends on every request, so
swapping an attribute is how a reload takes effect: no locks on the hot path, and a request in
flight finishes with the settings it started with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from apikeyrouter import ApiKeyRouter
from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.infrastructure.observability.logger import configure_logging, get_logger
from apikeyrouter.infrastructure.transport.base import HttpTransport
from apikeyrouter_proxy.config.settings import ProxyConfig
from apikeyrouter_proxy.middleware.auth import token_digest
from apikeyrouter_proxy.observability.access_log import AccessLog
from apikeyrouter_proxy.observability.metrics import ProxyMetrics
from apikeyrouter_proxy.observability.tracing import Tracing
from apikeyrouter_proxy.services.clients import ClientRegistry
from apikeyrouter_proxy.services.model_catalog import ModelCatalog
from apikeyrouter_proxy.services.router_service import ReloadReport, RouterService
from opentelemetry.sdk.trace.export import SpanExporter

_log = get_logger("apikeyrouter.proxy.config")
#: The core router's logger: one "routed" line per request at INFO (see logging.router_events).
ROUTER_LOGGER = "apikeyrouter.router"


@dataclass(slots=True)
class ReloadStatus:
    """What the last reload did; exposed by the state summary so operators (and tests) can
    tell an applied file from a rejected one without reading logs."""

    applied: int = 0
    rejected: int = 0
    last_applied_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_report: dict[str, list[str]] = field(default_factory=dict)


class ProxyRuntime:
    def __init__(
        self,
        config: ProxyConfig,
        *,
        config_path: Path | None = None,
        store: StateStore | None = None,
        transport: HttpTransport | None = None,
        span_exporter: SpanExporter | None = None,
        manage_log_level: bool = False,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.tracing = (
            Tracing(config.tracing, span_exporter)
            if config.tracing.enabled or span_exporter is not None
            else None
        )
        self.service = RouterService(config, store=store, transport=transport, tracing=self.tracing)
        self.catalog = ModelCatalog(self.service)
        self.metrics = ProxyMetrics()
        self.access_log = AccessLog(config.logging.access_log)
        self.clients = ClientRegistry(config.auth.clients)
        self.max_body_bytes = config.server.max_body_bytes
        self.admin_token_digest = self._admin_digest(config)
        self.started_at = time.time()
        self.ready = False
        self.reload_status = ReloadStatus()
        self._manage_log_level = manage_log_level

    @property
    def router(self) -> ApiKeyRouter:
        return self.service.router

    @staticmethod
    def _admin_digest(config: ProxyConfig) -> bytes | None:
        token = config.server.admin_token
        return token_digest(token.get_secret_value()) if token is not None else None

    def _apply_log_level(self, config: ProxyConfig) -> None:
        """When the proxy owns the process (CLI, module-level app): JSON lines on stderr at the
        configured level. Embedded in someone else's app, logging is theirs to configure."""
        if not self._manage_log_level:
            return
        level = logging.getLevelName(config.logging.level)
        configure_logging(config.logging.level)
        router_level = level if config.logging.router_events else max(level, logging.WARNING)
        logging.getLogger(ROUTER_LOGGER).setLevel(router_level)

    async def start(self) -> None:
        """Register the configured providers and keys; then ``/v1`` starts serving."""
        self._apply_log_level(self.config)
        report = await self.service.apply(self.config)
        self.reload_status.last_report = report.as_dict()
        self.ready = True
        _log.info(
            "proxy_started",
            providers=len(self.config.providers),
            keys=len(report.keys_added),
            clients=len(self.config.auth.clients),
        )

    async def apply(self, config: ProxyConfig) -> ReloadReport:
        """Switch to ``config`` (already validated). Server address changes need a restart."""
        report = await self.service.apply(config)
        old = self.config
        self.clients = ClientRegistry(config.auth.clients, previous=self.clients)
        self.max_body_bytes = config.server.max_body_bytes
        self.admin_token_digest = self._admin_digest(config)
        self.access_log.enabled = config.logging.access_log
        self._apply_log_level(config)
        self.config = config
        status = self.reload_status
        status.applied += 1
        status.last_applied_at = time.time()
        status.last_report = report.as_dict()
        self.metrics.config_reloads.labels("applied").inc()
        if (old.server.host, old.server.port) != (config.server.host, config.server.port):
            _log.warning("config_restart_needed", reason="server.host/port change needs a restart")
        if old.tracing != config.tracing:
            _log.warning("config_restart_needed", reason="tracing changes need a restart")
        _log.info("config_applied", **{k: v for k, v in status.last_report.items() if v})
        return report

    def reject(self, error: str) -> None:
        """Record a reload that was refused; the running config keeps serving."""
        status = self.reload_status
        status.rejected += 1
        status.last_error = error
        status.last_error_at = time.time()
        self.metrics.config_reloads.labels("rejected").inc()
        _log.error("config_rejected", error=error)

    async def close(self) -> None:
        self.ready = False
        await self.service.close()
        if self.tracing is not None:
            self.tracing.shutdown()
