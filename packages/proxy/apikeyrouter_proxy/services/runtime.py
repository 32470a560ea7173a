"""Everything a request needs, in one object that a config reload updates in place.

Handlers read ``runtime.clients``, ``runtime.max_body_bytes`` and friends on every request, so
swapping an attribute is how a reload takes effect: no locks on the hot path, and a request in
flight finishes with the settings it started with.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from apikeyrouter import ApiKeyRouter
from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.observability.logger import configure_logging, get_logger
from apikeyrouter.infrastructure.transport.base import HttpTransport
from apikeyrouter_proxy.config.master_key import resolve_master_key
from apikeyrouter_proxy.config.settings import ProxyConfig
from apikeyrouter_proxy.middleware.auth import token_digest
from apikeyrouter_proxy.observability.access_log import AccessLog
from apikeyrouter_proxy.observability.metrics import ProxyMetrics
from apikeyrouter_proxy.observability.tracing import Tracing
from apikeyrouter_proxy.services.clients import ClientRegistry
from apikeyrouter_proxy.services.model_catalog import ModelCatalog
from apikeyrouter_proxy.services.router_service import ReloadReport, RouterService
from apikeyrouter_proxy.services.store import (
    BuiltStore,
    DurableRecords,
    StoreHealth,
    build_store,
    store_health,
    wrap_store,
)
from apikeyrouter_proxy.services.usage_ledger import UsageLedgerWriter
from opentelemetry.sdk.trace.export import SpanExporter

_log = get_logger("apikeyrouter.proxy.config")
#: The core router's logger: one "routed" line per request at INFO (see logging.router_events).
ROUTER_LOGGER = "apikeyrouter.router"

#: Runs at start, after the store is initialised, the router follows it and the config's
#: providers and keys are applied, before the first request: e.g. loading persisted policies
#: and budgets from ``runtime.durable``.
StartupHook = Callable[["ProxyRuntime"], Awaitable[None]]


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
        # Checked first: a shared store without a master key must not even be built.
        master_key = resolve_master_key(config.store, os.environ)
        # A store passed in (tests, embedding) wins over the config's store section.
        self.store: BuiltStore = build_store(config.store) if store is None else wrap_store(store)
        self.service = RouterService(
            config,
            store=self.store.store,
            transport=transport,
            tracing=self.tracing,
            master_key=master_key,
            stable_key_ids=store is None and config.store.kind != "memory",
        )
        #: Ledger, policies and budgets when the store keeps them (MongoDB), else None.
        self.durable: DurableRecords | None = self.store.durable
        self.usage_ledger: UsageLedgerWriter | None = None
        if self.durable is not None and config.store.usage_ledger.enabled:
            self.usage_ledger = UsageLedgerWriter(
                self.durable, config.store.usage_ledger, on_drop=self._ledger_dropped
            )
        self.startup_hooks: list[StartupHook] = []
        self.catalog = ModelCatalog(self.service)
        self.metrics = ProxyMetrics()
        self.access_log = AccessLog(
            config.logging.access_log, flush_seconds=config.logging.access_log_flush_seconds
        )
        self.clients = ClientRegistry(config.auth.clients)
        self.max_body_bytes = config.server.max_body_bytes
        self.admin_token_digest = self._admin_digest(config)
        self.started_at = time.time()
        self.ready = False
        self.reload_status = ReloadStatus()
        self._manage_log_level = manage_log_level
        #: Whether the app may tune the interpreter's garbage collector (see ``create_app``).
        self.manage_gc = False

    @property
    def router(self) -> ApiKeyRouter:
        return self.service.router

    def on_startup(self, hook: StartupHook) -> None:
        """Run ``hook(runtime)`` in :meth:`start` (see :data:`StartupHook`)."""
        self.startup_hooks.append(hook)

    def _ledger_dropped(self, count: int) -> None:
        self.metrics.usage_ledger_dropped.inc(count)

    async def store_health(self) -> StoreHealth:
        """The state store's status for readiness: ok, degraded (fail-open) or unavailable."""
        return await store_health(self.store.kind, self.router.store)

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
        """Prepare the store, join the other replicas, register the configured providers and
        keys, run the startup hooks; then ``/v1`` starts serving.

        Order matters: migrations first (MongoDB), then the router loads every stored key and
        follows the others' changes (``router.start``), so config keys that another replica or
        an earlier run registered are adopted as they are, not registered twice."""
        self._apply_log_level(self.config)
        await self.store.initialize()
        following = await self.router.start()
        report = await self.service.apply(self.config)
        self.reload_status.last_report = report.as_dict()
        for hook in self.startup_hooks:
            await hook(self)
        if self.usage_ledger is not None:
            self.usage_ledger.start()
        self.ready = True
        _log.info(
            "proxy_started",
            providers=len(self.config.providers),
            keys=len(report.keys_added),
            keys_adopted=len(report.keys_adopted),
            clients=len(self.config.auth.clients),
            store=self.store.kind,
            following_replicas=following,
        )

    def record_usage(
        self,
        key_id: str,
        provider_id: str,
        model: str,
        client_id: str | None,
        usage: Usage | None,
    ) -> None:
        """Queue a served request's usage for the durable ledger (no-op without one). Its
        cost is what the tokens the provider reported cost (the same figure the spend
        windows are charged), not the estimate made before the call."""
        ledger = self.usage_ledger
        if ledger is not None:
            cost = None if usage is None else self.router.cost.actual(model, usage, provider_id)
            ledger.record(
                key_id, provider_id, model, client_id, usage, None if cost is None else cost.usd
            )

    async def apply(self, config: ProxyConfig) -> ReloadReport:
        """Switch to ``config`` (already validated). Server address changes need a restart."""
        report = await self.service.apply(config)
        old = self.config
        self.clients = ClientRegistry(config.auth.clients, previous=self.clients)
        self.max_body_bytes = config.server.max_body_bytes
        self.admin_token_digest = self._admin_digest(config)
        self.access_log.enabled = config.logging.access_log
        self.access_log.flush_seconds = config.logging.access_log_flush_seconds
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
        if old.store != config.store:
            _log.warning("config_restart_needed", reason="store changes need a restart")
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
        self.access_log.flush()
        if self.usage_ledger is not None:
            await self.usage_ledger.close()
        await self.service.close()
        if self.tracing is not None:
            self.tracing.shutdown()
