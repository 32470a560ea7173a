"""Gemini (Generative Language API) behind the OpenAI chat and embeddings interface.

The key travels only in the ``x-goog-api-key`` header: URLs end up in access logs, traces and
exception messages, so a key in a query string would leak. Translation lives in
:mod:`gemini_translation` and :mod:`gemini_stream`; this module owns the wire and error meaning.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from apikeyrouter.domain.interfaces.provider_adapter import (
    AdapterResult,
    StreamResult,
    UpstreamSuccess,
)
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure, RateLimitInfo
from apikeyrouter.domain.models.provider import ProviderCapabilities
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.adapters.base import (
    HttpProviderAdapter,
    UpstreamCall,
    invalid_request_failure,
    model_ids,
    unsupported_endpoint,
)
from apikeyrouter.infrastructure.adapters.gemini_stream import GeminiChunkTranslator, GeminiStream
from apikeyrouter.infrastructure.adapters.gemini_translation import (
    first_object,
    from_gemini_embedding_response,
    from_gemini_response,
    strip_model_prefix,
    to_gemini_embedding_request,
    to_gemini_request,
    usage_from_gemini,
)
from apikeyrouter.infrastructure.adapters.ratelimit_headers import parse_duration, parse_retry_after
from apikeyrouter.infrastructure.transport.base import HttpTransport
from apikeyrouter.utils.exceptions import InvalidRequestError
from apikeyrouter.utils.redaction import redact

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_BAD_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
_BAD_KEY_PHRASES = ("api_key_invalid", "api key not valid", "api key expired")
_KIND_BY_STATUS_NAME = {
    "RESOURCE_EXHAUSTED": FailureKind.RATE_LIMITED,
    "UNAUTHENTICATED": FailureKind.INVALID_KEY,
    "PERMISSION_DENIED": FailureKind.INVALID_KEY,
    "INVALID_ARGUMENT": FailureKind.BAD_REQUEST,
    "FAILED_PRECONDITION": FailureKind.BAD_REQUEST,
    "OUT_OF_RANGE": FailureKind.BAD_REQUEST,
    "UNAVAILABLE": FailureKind.PROVIDER_ERROR,
    "INTERNAL": FailureKind.PROVIDER_ERROR,
    "DEADLINE_EXCEEDED": FailureKind.PROVIDER_ERROR,
    "UNKNOWN": FailureKind.PROVIDER_ERROR,
}
_KIND_BY_HTTP = {
    400: FailureKind.BAD_REQUEST,
    401: FailureKind.INVALID_KEY,
    403: FailureKind.INVALID_KEY,
    413: FailureKind.BAD_REQUEST,
    429: FailureKind.RATE_LIMITED,
}
_CONTEXT_PHRASES = ("exceeds the maximum number of tokens", "input token count", "context window")


def _pacific() -> timezone | ZoneInfo:
    try:
        return ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:  # no tz database: standard time is close enough for a reset
        return timezone(timedelta(hours=-8))


def next_pacific_midnight(now: float) -> float:
    """Gemini's per-day quotas reset at midnight Pacific time."""
    zone = _pacific()
    local = datetime.fromtimestamp(now, zone)
    tomorrow = (local + timedelta(days=1)).date()
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone).timestamp()


def _error_object(payload: bytes) -> dict[str, Any]:
    try:
        parsed = first_object(orjson.loads(payload))
    except orjson.JSONDecodeError:
        return {}
    error = parsed.get("error") if parsed is not None else None
    return error if isinstance(error, dict) else {}


def _details(error: dict[str, Any], type_url: str) -> list[dict[str, Any]]:
    details = error.get("details")
    return [
        d
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and d.get("@type") == type_url
    ]


def _is_per_day(error: dict[str, Any]) -> bool:
    for detail in _details(error, _QUOTA_FAILURE):
        violations = detail.get("violations")
        for violation in violations if isinstance(violations, list) else []:
            if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId") or ""):
                return True
    return False


def _retry_delay(error: dict[str, Any]) -> float | None:
    for detail in _details(error, _RETRY_INFO):
        delay = detail.get("retryDelay")
        if isinstance(delay, str):
            seconds = parse_duration(delay)
            if seconds is not None and math.isfinite(seconds):
                return seconds
    return None


def _bad_key(error: dict[str, Any], text: str) -> bool:
    reasons = {str(d.get("reason")) for d in _details(error, _ERROR_INFO)}
    return bool(reasons & _BAD_KEY_REASONS) or any(p in text for p in _BAD_KEY_PHRASES)


def classify_gemini_error(
    status: int, payload: bytes, headers: Mapping[str, str], now: float, secret: str
) -> ProviderFailure:
    """Map a Gemini ``google.rpc.Status`` error to its meaning (the key redacted everywhere)."""
    error = _error_object(payload)
    status_name = str(error.get("status") or "")
    message = redact(str(error.get("message") or f"upstream HTTP {status}"), secret)
    text = message.lower()
    rate_limit = RateLimitInfo(retry_after_at=parse_retry_after(headers, now))
    delay = _retry_delay(error)
    if delay is not None:
        rate_limit.retry_after_at = now + delay
    kind = _KIND_BY_STATUS_NAME.get(status_name) or _KIND_BY_HTTP.get(status)
    if kind is None:
        kind = FailureKind.PROVIDER_ERROR if status >= 500 else FailureKind.BAD_REQUEST
    if _bad_key(error, text):
        kind = FailureKind.INVALID_KEY
    elif status_name == "NOT_FOUND" or status == 404:
        kind = FailureKind.MODEL_NOT_ALLOWED if "model" in text else FailureKind.BAD_REQUEST
    elif status_name == "PERMISSION_DENIED" and "model" in text:
        kind = FailureKind.MODEL_NOT_ALLOWED
    elif kind is FailureKind.RATE_LIMITED and _is_per_day(error):
        kind = FailureKind.QUOTA_EXHAUSTED
        rate_limit.retry_after_at = next_pacific_midnight(now)
    elif kind is FailureKind.BAD_REQUEST and any(p in text for p in _CONTEXT_PHRASES):
        kind = FailureKind.CONTEXT_TOO_LONG
    return ProviderFailure(
        kind=kind,
        status=status,
        message=message,
        code=status_name or None,
        error_type=status_name or None,
        rate_limit=rate_limit,
    )


class GeminiAdapter(HttpProviderAdapter):
    """Chat (plain and streaming), embeddings and model listing over the Gemini REST API.

    ``model_map`` renames logical model names to Gemini ones.
    """

    kind = "gemini"

    def __init__(
        self,
        base_url: str = "https://generativelanguage.googleapis.com/v1beta",
        *,
        transport: HttpTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
        model_map: Mapping[str, str] | None = None,
        capabilities: ProviderCapabilities | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(base_url, transport=transport, clock=clock)
        self._extra_headers = dict(extra_headers or {})
        self._model_map = dict(model_map or {})
        self.capabilities = capabilities or ProviderCapabilities(
            chat=True,
            completions=False,
            embeddings=True,
            streaming=True,
            tools=True,
            vision=True,
            list_models=True,
        )

    def _headers(self, secret: str) -> dict[str, str]:
        headers = {"x-goog-api-key": secret, "Content-Type": "application/json"}
        headers.update(self._extra_headers)
        return headers

    def _model(self, intent: RequestIntent) -> str:
        return strip_model_prefix(self._model_map.get(intent.model, intent.model))

    def _url(self, model: str, method: str) -> str:
        return f"{self.base_url}/models/{quote(model, safe='-._~')}:{method}"

    def _failure(
        self, status: int, payload: bytes, headers: Mapping[str, str], secret: str
    ) -> ProviderFailure:
        return classify_gemini_error(status, payload, headers, self._clock(), secret)

    def _call(self, secret: str, timeout: float) -> UpstreamCall:
        return UpstreamCall(self._headers(secret), secret, timeout, self._failure)

    async def send(self, intent: RequestIntent, secret: str, timeout: float) -> AdapterResult:
        model = self._model(intent)
        try:
            if intent.endpoint is Endpoint.EMBEDDINGS:
                method, body = to_gemini_embedding_request(intent.body, model)
            elif intent.endpoint is Endpoint.CHAT:
                method, body = "generateContent", to_gemini_request(intent.body)
            else:
                return unsupported_endpoint("Gemini", intent.endpoint)
        except InvalidRequestError as exc:
            return invalid_request_failure(exc)
        url = self._url(model, method)
        reply = await self._post_json(url, orjson.dumps(body), self._call(secret, timeout))
        if isinstance(reply, ProviderFailure):
            return reply
        payload = reply.payload
        if intent.endpoint is Endpoint.EMBEDDINGS:
            encoding = intent.body.get("encoding_format")
            return UpstreamSuccess(
                from_gemini_embedding_response(payload, model, encoding), Usage()
            )
        now = self._clock()
        chat = from_gemini_response(payload, intent.model, int(now), _response_id())
        return UpstreamSuccess(chat, usage_from_gemini(payload.get("usageMetadata")))

    async def open_stream(self, intent: RequestIntent, secret: str, timeout: float) -> StreamResult:
        if intent.endpoint is not Endpoint.CHAT:
            return unsupported_endpoint("Gemini", intent.endpoint)
        model = self._model(intent)
        try:
            body = to_gemini_request(intent.body)
        except InvalidRequestError as exc:
            return invalid_request_failure(exc)
        url = self._url(model, "streamGenerateContent") + "?alt=sse"
        response = await self._open_stream(url, orjson.dumps(body), self._call(secret, timeout))
        if isinstance(response, ProviderFailure):
            return response
        now = self._clock()
        translator = GeminiChunkTranslator(intent.model, int(now), _response_id())
        return GeminiStream(response, RateLimitInfo(), translator, secret)

    async def list_models(self, secret: str, timeout: float) -> list[str] | ProviderFailure:
        """All model ids without the ``models/`` prefix, following ``nextPageToken``."""
        url, first_page = f"{self.base_url}/models", {"pageSize": "1000"}
        return await self._list_model_pages(
            url, first_page, _model_page, self._call(secret, timeout)
        )


def _response_id() -> str:
    """Gemini replies may carry no id, and OpenAI clients expect a ``chatcmpl-`` one."""
    return "chatcmpl-" + secrets.token_hex(12)


def _model_page(body: dict[str, Any]) -> tuple[list[str], dict[str, str] | None]:
    """One ``models.list`` page: its ids, and the ``pageToken`` while one is given."""
    entries = body.get("models")
    if not isinstance(entries, list):
        return [], None
    names = [strip_model_prefix(name) for name in model_ids(entries, "name")]
    token = body.get("nextPageToken")
    if not isinstance(token, str) or not token:
        return names, None
    return names, {"pageToken": token}
