"""OpenTelemetry spans around routing and each upstream call, off unless configured.

Off by default and then free: the hot path checks one attribute for None. When on, the proxy
owns its TracerProvider (no global state, so two apps in one process, as in tests, don't mix
spans). The upstream span comes from wrapping each provider adapter, so it is a real child of
the routing span, timed around the actual call, without the core knowing about tracing.
Exceptions are not recorded on spans (their text could, in theory, carry upstream echoes);
only the error's type and the outcome are.
"""

from __future__ import annotations

from typing import Any

from apikeyrouter import ApiKeyRouter, RoutedStream, RouterResponse
from apikeyrouter.domain.interfaces.provider_adapter import (
    AdapterResult,
    ProviderAdapter,
    StreamResult,
    UpstreamSuccess,
)
from apikeyrouter.domain.models.outcome import ProviderFailure
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.utils.exceptions import ApiKeyRouterError, ConfigurationError
from apikeyrouter_proxy.config.schema import TracingConfig
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Status, StatusCode, Tracer

ROUTE_SPAN = "apikeyrouter.route"
UPSTREAM_SPAN = "apikeyrouter.upstream"


def _otlp_exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise ConfigurationError(
            "tracing.exporter 'otlp' needs the opentelemetry-exporter-otlp-proto-http package"
        ) from exc
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter


class Tracing:
    """A tracer provider and its tracer. ``exporter`` overrides the configured one (tests)."""

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name})
        )
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif config.exporter == "otlp":
            self.provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            self.provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        self.tracer: Tracer = self.provider.get_tracer("apikeyrouter_proxy")

    def shutdown(self) -> None:
        self.provider.shutdown()


def _outcome(span: Any, result: AdapterResult | StreamResult) -> None:
    if isinstance(result, ProviderFailure):
        span.set_attribute("apikeyrouter.outcome", result.kind.value)
        if result.status is not None:
            span.set_attribute("http.response.status_code", result.status)
        span.set_status(Status(StatusCode.ERROR, result.kind.value))
    else:
        span.set_attribute("apikeyrouter.outcome", "success")
        status = result.status if isinstance(result, UpstreamSuccess) else 200
        span.set_attribute("http.response.status_code", status)


class TracingAdapter(ProviderAdapter):
    """Delegates to an adapter, with one span per upstream call. Never sees more than the
    adapter already does; puts no key material anywhere."""

    def __init__(self, inner: ProviderAdapter, tracer: Tracer, provider_id: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._provider_id = provider_id
        self.kind = inner.kind
        self.base_url = inner.base_url
        self.capabilities = inner.capabilities

    def supports(self, endpoint: Endpoint, stream: bool) -> bool:
        return self._inner.supports(endpoint, stream)

    def _attributes(self, intent: RequestIntent) -> dict[str, Any]:
        return {
            "apikeyrouter.provider": self._provider_id,
            "apikeyrouter.provider_kind": self.kind,
            "apikeyrouter.endpoint": intent.endpoint.value,
            "apikeyrouter.model": intent.model,
            "apikeyrouter.stream": intent.stream,
        }

    async def send(self, intent: RequestIntent, secret: str, timeout: float) -> AdapterResult:
        with self._tracer.start_as_current_span(
            UPSTREAM_SPAN, attributes=self._attributes(intent), record_exception=False
        ) as span:
            result = await self._inner.send(intent, secret, timeout)
            _outcome(span, result)
            return result

    async def open_stream(self, intent: RequestIntent, secret: str, timeout: float) -> StreamResult:
        with self._tracer.start_as_current_span(
            UPSTREAM_SPAN, attributes=self._attributes(intent), record_exception=False
        ) as span:
            result = await self._inner.open_stream(intent, secret, timeout)
            _outcome(span, result)
            return result

    async def list_models(self, secret: str, timeout: float) -> list[str] | ProviderFailure:
        return await self._inner.list_models(secret, timeout)

    async def close(self) -> None:
        await self._inner.close()


def _route_attributes(intent: RequestIntent) -> dict[str, Any]:
    return {
        "apikeyrouter.request_id": intent.request_id,
        "apikeyrouter.endpoint": intent.endpoint.value,
        "apikeyrouter.model": intent.model,
        "apikeyrouter.stream": intent.stream,
    }


def _routed(span: Any, key_id: str, provider_id: str, attempts: int) -> None:
    span.set_attribute("apikeyrouter.key_id", key_id)
    span.set_attribute("apikeyrouter.provider", provider_id)
    span.set_attribute("apikeyrouter.attempts", attempts)


def _failed(span: Any, exc: BaseException) -> None:
    span.set_attribute("error.type", type(exc).__name__)
    if isinstance(exc, ApiKeyRouterError):
        span.set_attribute("http.response.status_code", exc.status)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


async def traced_route(
    tracing: Tracing, router: ApiKeyRouter, intent: RequestIntent
) -> RouterResponse:
    """``router.route`` inside a routing span (upstream spans nest under it)."""
    with tracing.tracer.start_as_current_span(
        ROUTE_SPAN,
        attributes=_route_attributes(intent),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            response = await router.route(intent)
        except Exception as exc:
            _failed(span, exc)
            raise
        _routed(span, response.key_used, response.provider_id, len(response.attempts))
        return response


async def traced_open_stream(
    tracing: Tracing, router: ApiKeyRouter, intent: RequestIntent
) -> RoutedStream:
    """``router.open_stream`` inside a routing span that ends once the stream is open."""
    with tracing.tracer.start_as_current_span(
        ROUTE_SPAN,
        attributes=_route_attributes(intent),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            stream = await router.open_stream(intent)
        except Exception as exc:
            _failed(span, exc)
            raise
        _routed(span, stream.key_used, stream.provider_id, len(stream.attempts) + 1)
        return stream
