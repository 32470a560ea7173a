"""Anthropic Messages API behind the OpenAI chat interface.

Translation lives in :mod:`anthropic_translation` and :mod:`anthropic_stream`; this module owns
the wire: headers, URLs, error meaning and the ``anthropic-ratelimit-*`` quota signal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from apikeyrouter.domain.interfaces.provider_adapter import (
    AdapterResult,
    StreamResult,
    UpstreamSuccess,
)
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure, RateLimitInfo
from apikeyrouter.domain.models.provider import ProviderCapabilities
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.infrastructure.adapters.anthropic_stream import (
    AnthropicChunkTranslator,
    AnthropicStream,
    AnthropicStreamError,
)
from apikeyrouter.infrastructure.adapters.anthropic_translation import (
    DEFAULT_MAX_TOKENS,
    from_anthropic_response,
    to_anthropic_request,
    usage_from_anthropic,
)
from apikeyrouter.infrastructure.adapters.base import (
    HttpProviderAdapter,
    UpstreamCall,
    invalid_request_failure,
    model_ids,
    parse_json_object,
    transport_failure,
    unsupported_endpoint,
)
from apikeyrouter.infrastructure.adapters.ratelimit_headers import (
    int_header,
    parse_retry_after,
    parse_rfc3339,
)
from apikeyrouter.infrastructure.transport.base import HttpTransport, TransportError
from apikeyrouter.utils.exceptions import InvalidRequestError
from apikeyrouter.utils.redaction import redact

API_VERSION = "2023-06-01"

_KIND_BY_TYPE = {
    "rate_limit_error": FailureKind.RATE_LIMITED,
    "billing_error": FailureKind.QUOTA_EXHAUSTED,
    "authentication_error": FailureKind.INVALID_KEY,
    "permission_error": FailureKind.INVALID_KEY,
    "request_too_large": FailureKind.BAD_REQUEST,
    "invalid_request_error": FailureKind.BAD_REQUEST,
    "overloaded_error": FailureKind.PROVIDER_ERROR,
    "api_error": FailureKind.PROVIDER_ERROR,
    "timeout_error": FailureKind.PROVIDER_ERROR,
}
_KIND_BY_STATUS = {
    400: FailureKind.BAD_REQUEST,
    401: FailureKind.INVALID_KEY,
    402: FailureKind.QUOTA_EXHAUSTED,
    403: FailureKind.INVALID_KEY,
    413: FailureKind.BAD_REQUEST,
    422: FailureKind.BAD_REQUEST,
    429: FailureKind.RATE_LIMITED,
}
#: An error *event* carries no HTTP status; these are the statuses the same error gets as a reply.
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_BILLING_PHRASES = ("credit balance is too low", "reached your specified api usage limits")
_CONTEXT_PHRASES = (
    "prompt is too long",
    "exceed context",
    "exceeds context",
    "context limit",
    "context window",
    "context length",
)


def classify_anthropic_error(
    status: int | None, payload: bytes, rate_limit: RateLimitInfo, secret: str
) -> ProviderFailure:
    """Map an Anthropic error reply (or stream error event) to its meaning."""
    parsed = parse_json_object(payload) or {}
    error = parsed.get("error") if isinstance(parsed.get("error"), dict) else {}
    assert isinstance(error, dict)
    etype = error.get("type") if isinstance(error.get("type"), str) else None
    raw_message = error.get("message")
    message = redact(str(raw_message) if raw_message else f"upstream HTTP {status}", secret)
    return ProviderFailure(
        kind=_kind(status, etype, message.lower()),
        status=status,
        message=message,
        code=etype,
        error_type=etype,
        rate_limit=rate_limit,
    )


def _kind(status: int | None, etype: str | None, text: str) -> FailureKind:
    if any(phrase in text for phrase in _BILLING_PHRASES):
        return FailureKind.QUOTA_EXHAUSTED
    if etype == "not_found_error" or status == 404:
        return FailureKind.MODEL_NOT_ALLOWED if "model" in text else FailureKind.BAD_REQUEST
    kind = _KIND_BY_TYPE.get(etype or "")
    if kind is None and status is not None:
        kind = _KIND_BY_STATUS.get(status)
        if kind is None:
            kind = FailureKind.PROVIDER_ERROR if status >= 500 else FailureKind.BAD_REQUEST
    if kind is None:
        kind = FailureKind.PROVIDER_ERROR
    if kind is FailureKind.INVALID_KEY and (etype == "permission_error" or status == 403):
        return FailureKind.MODEL_NOT_ALLOWED if "model" in text else kind
    if kind is FailureKind.BAD_REQUEST and any(phrase in text for phrase in _CONTEXT_PHRASES):
        return FailureKind.CONTEXT_TOO_LONG
    return kind


def _window(headers: Mapping[str, str], name: str) -> tuple[int | None, int | None, float | None]:
    prefix = f"anthropic-ratelimit-{name}-"
    return (
        int_header(headers, prefix + "limit"),
        int_header(headers, prefix + "remaining"),
        _time_header(headers, prefix + "reset"),
    )


def _time_header(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    return parse_rfc3339(value) if value is not None else None


def _tightness(window: tuple[int | None, int | None, float | None]) -> tuple[float, float]:
    limit, remaining, _ = window
    if remaining is None:
        return (2.0, float("inf"))
    fraction = remaining / limit if limit else 1.0
    return (fraction, float(remaining))


def parse_anthropic_headers(headers: Mapping[str, str], now: float) -> RateLimitInfo:
    """Quota facts from ``anthropic-ratelimit-*`` (names lower-cased).

    Anthropic limits total, input and output tokens separately; the token window reported is the
    tightest of the three (lowest remaining fraction), since that one stops the key first.
    """
    requests_limit, requests_remaining, requests_reset = _window(headers, "requests")
    token_windows = [_window(headers, name) for name in ("tokens", "input-tokens", "output-tokens")]
    present = [w for w in token_windows if any(v is not None for v in w)]
    tokens_limit, tokens_remaining, tokens_reset = (
        min(present, key=_tightness) if present else (None, None, None)
    )
    return RateLimitInfo(
        requests_limit=requests_limit,
        requests_remaining=requests_remaining,
        requests_reset_at=requests_reset,
        tokens_limit=tokens_limit,
        tokens_remaining=tokens_remaining,
        tokens_reset_at=tokens_reset,
        retry_after_at=parse_retry_after(headers, now),
    )


class AnthropicAdapter(HttpProviderAdapter):
    """Chat (plain and streaming) and model listing over the Anthropic Messages API.

    ``default_max_tokens`` fills the ``max_tokens`` Anthropic requires when the caller gave none;
    ``model_map`` renames logical model names to Anthropic ones.
    """

    kind = "anthropic"

    def __init__(
        self,
        base_url: str = "https://api.anthropic.com",
        *,
        transport: HttpTransport | None = None,
        api_version: str = API_VERSION,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        extra_headers: Mapping[str, str] | None = None,
        model_map: Mapping[str, str] | None = None,
        capabilities: ProviderCapabilities | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(base_url, transport=transport, clock=clock)
        self._api_version = api_version
        self._default_max_tokens = default_max_tokens
        self._extra_headers = dict(extra_headers or {})
        self._model_map = dict(model_map or {})
        self.capabilities = capabilities or ProviderCapabilities(
            chat=True,
            completions=False,
            embeddings=False,
            streaming=True,
            tools=True,
            vision=True,
            list_models=True,
        )
        self._messages_url = self.base_url + "/v1/messages"

    def _headers(self, secret: str) -> dict[str, str]:
        headers = {
            "x-api-key": secret,
            "anthropic-version": self._api_version,
            "content-type": "application/json",
        }
        headers.update(self._extra_headers)
        return headers

    def _request(self, intent: RequestIntent, stream: bool) -> bytes | ProviderFailure:
        """The encoded Messages request, or why the intent cannot be one (no key spent)."""
        if intent.endpoint is not Endpoint.CHAT:
            return unsupported_endpoint("Anthropic", intent.endpoint)
        try:
            request = to_anthropic_request(
                intent.body,
                self._model_map.get(intent.model, intent.model),
                default_max_tokens=intent.max_tokens or self._default_max_tokens,
                stream=stream,
            )
        except InvalidRequestError as exc:
            return invalid_request_failure(exc)
        return orjson.dumps(request)

    def _failure(
        self, status: int, payload: bytes, headers: Mapping[str, str], secret: str
    ) -> ProviderFailure:
        """Error replies carry quota headers too: a 429's reset time is what cools the key."""
        rate_limit = parse_anthropic_headers(headers, self._clock())
        return classify_anthropic_error(status, payload, rate_limit, secret)

    def _call(self, secret: str, timeout: float) -> UpstreamCall:
        return UpstreamCall(self._headers(secret), secret, timeout, self._failure)

    async def send(self, intent: RequestIntent, secret: str, timeout: float) -> AdapterResult:
        request = self._request(intent, stream=False)
        if isinstance(request, ProviderFailure):
            return request
        reply = await self._post_json(self._messages_url, request, self._call(secret, timeout))
        if isinstance(reply, ProviderFailure):
            return reply
        now = self._clock()
        rate_limit = parse_anthropic_headers(reply.headers, now)
        body = from_anthropic_response(reply.payload, intent.model, int(now))
        return UpstreamSuccess(body, usage_from_anthropic(reply.payload.get("usage")), rate_limit)

    async def open_stream(self, intent: RequestIntent, secret: str, timeout: float) -> StreamResult:
        request = self._request(intent, stream=True)
        if isinstance(request, ProviderFailure):
            return request
        response = await self._open_stream(self._messages_url, request, self._call(secret, timeout))
        if isinstance(response, ProviderFailure):
            return response
        now = self._clock()
        rate_limit = parse_anthropic_headers(response.headers, now)
        translator = AnthropicChunkTranslator(intent.model, int(now))
        stream = AnthropicStream(response, rate_limit, translator, secret)
        try:
            started = await stream.first_event()
        except AnthropicStreamError as exc:
            await response.aclose()
            event = {"type": "error", "error": {"type": exc.error_type, "message": exc.message}}
            status = _STATUS_BY_TYPE.get(exc.error_type or "")
            return classify_anthropic_error(status, orjson.dumps(event), rate_limit, secret)
        except TransportError as exc:
            await response.aclose()
            return transport_failure(exc)
        if not started:
            await response.aclose()
            return ProviderFailure(
                FailureKind.CONNECTION, 200, "upstream stream ended before its first event"
            )
        return stream

    async def list_models(self, secret: str, timeout: float) -> list[str] | ProviderFailure:
        """All model ids, following ``has_more``/``last_id`` pagination."""
        url, first_page = f"{self.base_url}/v1/models", {"limit": "1000"}
        return await self._list_model_pages(
            url, first_page, _model_page, self._call(secret, timeout)
        )


def _model_page(body: dict[str, Any]) -> tuple[list[str], dict[str, str] | None]:
    """One ``/v1/models`` page: its ids, and the ``after_id`` cursor while ``has_more``."""
    data = body.get("data")
    if not isinstance(data, list):
        return [], None
    last_id = body.get("last_id")
    if body.get("has_more") is not True or not isinstance(last_id, str):
        return model_ids(data, "id"), None
    return model_ids(data, "id"), {"after_id": last_id}
