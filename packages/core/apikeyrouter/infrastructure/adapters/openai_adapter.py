"""OpenAI (and any OpenAI-compatible endpoint): requests pass through nearly untouched."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
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
from apikeyrouter.infrastructure.adapters.base import (
    HttpProviderAdapter,
    UpstreamCall,
    model_ids,
    parse_json_object,
    usage_from_openai,
)
from apikeyrouter.infrastructure.adapters.ratelimit_headers import parse_openai_headers
from apikeyrouter.infrastructure.adapters.sse import SseUpstreamStream, sse_data
from apikeyrouter.infrastructure.transport.base import (
    HttpTransport,
    TransportError,
)
from apikeyrouter.utils.exceptions import StreamInterruptedError
from apikeyrouter.utils.redaction import redact

_PATHS = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
}
_CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
_MODEL_CODES = frozenset({"model_not_found", "model_not_available"})
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


def classify_openai_error(
    status: int, payload: bytes, rate_limit: RateLimitInfo, secret: str
) -> ProviderFailure:
    """Map an OpenAI error response to its meaning (see the failure table in the docs)."""
    parsed = parse_json_object(payload) or {}
    error = parsed.get("error") if isinstance(parsed.get("error"), dict) else {}
    assert isinstance(error, dict)
    code = error.get("code") if isinstance(error.get("code"), str) else None
    etype = error.get("type") if isinstance(error.get("type"), str) else None
    raw_message = error.get("message")
    message = redact(str(raw_message) if raw_message else f"upstream HTTP {status}", secret)
    param = error.get("param") if isinstance(error.get("param"), str) else None
    text = message.lower()
    if status == 429:
        if code in _QUOTA_CODES or etype in _QUOTA_CODES:
            kind = FailureKind.QUOTA_EXHAUSTED
        else:
            kind = FailureKind.RATE_LIMITED
    elif status == 401:
        kind = FailureKind.INVALID_KEY
    elif status == 403:
        kind = FailureKind.MODEL_NOT_ALLOWED if "model" in text else FailureKind.INVALID_KEY
    elif status == 404 and (code in _MODEL_CODES or "model" in text):
        kind = FailureKind.MODEL_NOT_ALLOWED
    elif status in (400, 404, 413, 422):
        if code == "context_length_exceeded":
            kind = FailureKind.CONTEXT_TOO_LONG
        elif code in _CONTENT_POLICY_CODES:
            kind = FailureKind.CONTENT_POLICY
        else:
            kind = FailureKind.BAD_REQUEST
    else:
        kind = FailureKind.PROVIDER_ERROR
    return ProviderFailure(
        kind=kind,
        status=status,
        message=message,
        code=code,
        param=param,
        error_type=etype,
        rate_limit=rate_limit,
    )


class OpenAIStream(SseUpstreamStream):
    """SSE ``data:`` lines of an OpenAI stream, yielded as raw JSON payloads."""

    async def _iterate(self) -> AsyncIterator[bytes]:
        done = False
        try:
            async for line in self._response.iter_lines():
                payload = sse_data(line)
                if payload is None:
                    continue
                if payload == b"[DONE]":
                    done = True
                    break
                if b'"usage":{' in payload or b'"usage": {' in payload:
                    chunk = parse_json_object(payload)
                    if chunk is not None:
                        self.usage = usage_from_openai(chunk.get("usage"))
                if payload.startswith(b'{"error"'):
                    chunk = parse_json_object(payload) or {}
                    error = chunk.get("error")
                    detail = error.get("message") if isinstance(error, dict) else None
                    raise StreamInterruptedError(redact(f"upstream stream error: {detail}"))
                yield payload
        except TransportError as exc:
            raise StreamInterruptedError(f"upstream stream broke off: {exc}") from exc
        finally:
            await self._response.aclose()
        if not done:
            raise StreamInterruptedError("upstream stream ended without [DONE]")


class OpenAIAdapter(HttpProviderAdapter):
    """Chat, legacy completions, embeddings and models over the OpenAI wire format.

    ``model_map`` renames logical model names for OpenAI-compatible servers whose names differ.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
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
            completions=True,
            embeddings=True,
            streaming=True,
            tools=True,
            vision=True,
            list_models=True,
        )
        self._urls = {endpoint: self.base_url + path for endpoint, path in _PATHS.items()}

    def _headers(self, secret: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        headers.update(self._extra_headers)
        return headers

    def _body(self, intent: RequestIntent, stream: bool) -> bytes:
        body: dict[str, Any] = intent.body
        mapped = self._model_map.get(intent.model)
        if stream or mapped is not None:
            body = dict(body)
            if mapped is not None:
                body["model"] = mapped
            if stream:
                body["stream"] = True
                options = body.get("stream_options")
                body["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
        return orjson.dumps(body)

    def _failure(
        self, status: int, payload: bytes, headers: Mapping[str, str], secret: str
    ) -> ProviderFailure:
        """Error replies carry quota headers too: a 429's reset time is what cools the key."""
        return classify_openai_error(
            status, payload, parse_openai_headers(headers, self._clock()), secret
        )

    def _call(self, secret: str, timeout: float) -> UpstreamCall:
        return UpstreamCall(self._headers(secret), secret, timeout, self._failure)

    async def send(self, intent: RequestIntent, secret: str, timeout: float) -> AdapterResult:
        url, body = self._urls[intent.endpoint], self._body(intent, stream=False)
        reply = await self._post_json(url, body, self._call(secret, timeout))
        if isinstance(reply, ProviderFailure):
            return reply
        rate_limit = parse_openai_headers(reply.headers, self._clock())
        usage = usage_from_openai(reply.payload.get("usage"))
        return UpstreamSuccess(reply.payload, usage, rate_limit, raw=reply.raw)

    async def open_stream(self, intent: RequestIntent, secret: str, timeout: float) -> StreamResult:
        url, body = self._urls[intent.endpoint], self._body(intent, stream=True)
        response = await self._open_stream(url, body, self._call(secret, timeout))
        if isinstance(response, ProviderFailure):
            return response
        return OpenAIStream(response, parse_openai_headers(response.headers, self._clock()))

    async def list_models(self, secret: str, timeout: float) -> list[str] | ProviderFailure:
        """One unpaginated listing: OpenAI-compatible servers answer ``/models`` in one page."""
        url = self.base_url + "/models"
        response = await self._exchange("GET", url, None, self._call(secret, timeout))
        if isinstance(response, ProviderFailure):
            return response
        data = (parse_json_object(response.body) or {}).get("data")
        return model_ids(data, "id") if isinstance(data, list) else []
