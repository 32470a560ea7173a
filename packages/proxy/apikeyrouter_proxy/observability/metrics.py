"""Prometheus metrics, in a registry owned by one app (never the process-global one).

Per-request work is a few dictionary updates: the families every request touches are lock-free
(``hot_metrics``), and the rarer ones cache their labelled children so the hot path skips
prometheus-client's label validation. Key state and remaining quota are not
tracked per request at all; they are read from the router when ``/metrics`` is scraped
(``key_metrics``). Labels carry key *ids*, which are random and safe; never key material.
"""

from __future__ import annotations

from typing import TypeVar, cast

from apikeyrouter import ApiKeyRouter
from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.observability.hot_metrics import HotCounter, HotHistogram
from apikeyrouter_proxy.observability.key_metrics import KeyGauges
from prometheus_client import (
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

CONTENT_TYPE = CONTENT_TYPE_LATEST
M = TypeVar("M", bound=MetricWrapperBase)
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
OVERHEAD_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
)  # fmt: skip

# The *_created series double the exposition for no use to a dashboard; prometheus-client only
# offers a process-wide switch.
disable_created_metrics()  # type: ignore[no-untyped-call]


_STATUS_TEXT = {status: str(status) for status in range(100, 600)}


def _status_text(status: int) -> str:
    return _STATUS_TEXT.get(status) or str(status)


class ProxyMetrics:
    def __init__(self) -> None:
        registry = CollectorRegistry(auto_describe=False)
        self.registry = registry
        # Updated on every request: lock-free families (see hot_metrics).
        self.requests = HotCounter(
            "apikeyrouter_proxy_requests",
            "Requests handled, by route template, provider that served them and HTTP status.",
            ["route", "provider", "status"],
        )
        self.duration = HotHistogram(
            "apikeyrouter_proxy_request_duration_seconds",
            "Time from request start to the end of the response, by route.",
            ["route"],
            LATENCY_BUCKETS,
        )
        self.overhead = HotHistogram(
            "apikeyrouter_proxy_router_overhead_seconds",
            "Time spent in the proxy and router, excluding upstream calls (routed requests).",
            ["route"],
            OVERHEAD_BUCKETS,
        )
        self.upstream_rate_limited = Counter(
            "apikeyrouter_proxy_upstream_rate_limited",
            "Upstream 429 answers, by provider and key id.",
            ["provider", "key_id"],
            registry=registry,
        )
        self.failovers = Counter(
            "apikeyrouter_proxy_failovers",
            "Requests that needed more than one upstream attempt, by route.",
            ["route"],
            registry=registry,
        )
        self.spend = HotCounter(
            "apikeyrouter_proxy_spend_usd",
            "Estimated spend of served requests (router's price table), by provider and key id.",
            ["provider", "key_id"],
        )
        for hot in (self.requests, self.duration, self.overhead, self.spend):
            registry.register(hot)
        self.client_rate_limited = Counter(
            "apikeyrouter_proxy_client_rate_limited",
            "Requests refused by a client's own requests-per-minute limit.",
            ["client_id"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "apikeyrouter_proxy_config_reloads",
            "Configuration reloads, by result (applied or rejected).",
            ["result"],
            registry=registry,
        )
        self.usage_ledger_dropped = Counter(
            "apikeyrouter_proxy_usage_ledger_dropped",
            "Served requests whose usage was not queued for the durable ledger (buffer full).",
            registry=registry,
        )
        #: Key state and quota per key, written after the registry's families at each scrape.
        self.key_gauges = KeyGauges()
        self.served = 0
        self._status_classes: dict[int, int] = {}
        #: (metric, label values) -> labelled child: prometheus-client validates the labels
        #: on every ``labels()`` call, which the hot path should not pay for.
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def _child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, built once per label values."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return cast(M, child)

    def observe(self, ctx: RequestContext, seconds: float) -> None:
        """Record one finished request (hot path: cached children, no label validation)."""
        route, status = ctx.route, ctx.status
        provider = ctx.provider or ""
        self.requests.inc((route, provider, _status_text(status)))
        self.duration.observe((route,), seconds)
        self.served += 1
        status_class = status // 100
        self._status_classes[status_class] = self._status_classes.get(status_class, 0) + 1
        upstream = ctx.upstream_seconds
        if upstream is not None:
            self.overhead.observe((route,), max(0.0, seconds - upstream))
        if ctx.cost_usd:
            self.spend.inc((provider, ctx.key_id or ""), ctx.cost_usd)
        if ctx.attempts > 1:
            self._attempt_details(ctx)

    def _attempt_details(self, ctx: RequestContext) -> None:
        self._child(self.failovers, ctx.route).inc()
        for record in ctx.attempt_records or ():
            if record.status == 429 or record.outcome == "rate_limited":
                self._child(self.upstream_rate_limited, record.provider_id, record.key_id).inc()

    def status_classes(self) -> dict[str, int]:
        """Requests served so far by status class ("2xx", "4xx", ...)."""
        return {f"{c}xx": n for c, n in sorted(self._status_classes.items())}

    async def render(self, router: ApiKeyRouter) -> bytes:
        """The whole exposition: the registry's families, then key state and quota per key
        as they are now."""
        return generate_latest(self.registry) + await self.key_gauges.render(router)
