"""Pool keys for any HTTP API, not only LLMs, described by a :class:`GenericHttpConfig`.

Why this exists: the router's value (quota awareness, failover, dead-key detection) is not
specific to LLMs. Any API that meters per key (geocoding, search, translation, market data) can
be pooled once the adapter knows where the key goes, which headers carry the quota and what the
statuses mean; the config says exactly that, so no code is needed per API.

Where the key goes. ``key_in: header`` is the default and the preferred placement
(``Authorization: Bearer <key>``, or any header such as ``X-API-Key`` with any prefix).
``key_in: query`` exists because some APIs accept nothing else, but a key in a URL is inherently
visible to everyone who records URLs: the upstream's access logs, its CDN, and any proxy in
between, all outside this library's reach. What this module controls, it keeps clean: URLs are
never logged nor put into messages, the transports' errors carry no URL, and every failure
message is scrubbed of the key (as sent, URL-encoded, and any 8-character piece of it) before
it can reach a log line, an exception or a caller.

Two wire modes (see the config): ``raw`` sends the caller's body as JSON (query parameters for
GET/DELETE) and returns whatever JSON comes back as a dict; ``openai`` speaks the OpenAI format
for servers :class:`OpenAIAdapter` cannot reach (Azure's ``api-key`` header and
``?api-version=``, keys in the query, the model in the path). :func:`openai_compatible` and
:func:`azure_openai` build the common OpenAI-style providers.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode

import orjson

from apikeyrouter.domain.interfaces.provider_adapter import (
    AdapterResult,
    StreamResult,
    UpstreamStream,
    UpstreamSuccess,
)
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure, RateLimitInfo
from apikeyrouter.domain.models.provider import ProviderCapabilities
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.adapters.base import (
    HttpProviderAdapter,
    parse_json_object,
    transport_failure,
    usage_from_openai,
)
from apikeyrouter.infrastructure.adapters.generic_http_config import (
    QUERY_METHODS,
    GenericHttpConfig,
    RateLimitHeaders,
    UsagePaths,
    kind_for_status,
)
from apikeyrouter.infrastructure.adapters.openai_adapter import OpenAIAdapter, classify_openai_error
from apikeyrouter.infrastructure.adapters.ratelimit_headers import (
    parse_duration,
    parse_retry_after,
    parse_rfc3339,
)
from apikeyrouter.infrastructure.transport.base import (
    HttpStreamResponse,
    HttpTransport,
    TransportError,
)
from apikeyrouter.utils.exceptions import StreamInterruptedError
from apikeyrouter.utils.redaction import REDACTED, redact

__all__ = [
    "AZURE_API_VERSION",
    "OPENAI_COMPATIBLE_PRESETS",
    "GenericHttpAdapter",
    "GenericSseStream",
    "azure_openai",
    "extract_usage",
    "openai_compatible",
    "parse_rate_limit_headers",
    "scrub_secret",
]

_PIECE = 8  # no run of this many characters of a key survives scrubbing
_MAX_DETAIL = 300
_MESSAGE_FIELDS = ("message", "error_description", "detail", "title", "error")
_EPOCH_MILLIS = 1e11  # an "epoch" reset larger than this is in milliseconds (year 5138+ otherwise)


# --- secrets ------------------------------------------------------------------------------------
def scrub_secret(text: str, secret: str) -> str:
    """``text`` without ``secret``: as sent, URL-encoded, or any 8-character piece of it.

    The pieces matter because upstreams echo keys truncated or masked ("key abcd1234... is
    invalid") and because a message cut to length may cut a key in two.
    """
    if not secret:
        return redact(text)
    forms = sorted({secret, quote(secret, safe=""), quote_plus(secret)}, key=len, reverse=True)
    text = redact(text, *forms)
    if len(secret) < _PIECE:
        return text
    marks = bytearray(len(text))
    for piece in {secret[i : i + _PIECE] for i in range(len(secret) - _PIECE + 1)}:
        start = text.find(piece)
        while start != -1:
            marks[start : start + _PIECE] = b"\x01" * _PIECE
            start = text.find(piece, start + 1)
    if not any(marks):
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        if marks[index]:
            while index < len(text) and marks[index]:
                index += 1
            out.append(REDACTED)
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


# --- rate limits and usage ----------------------------------------------------------------------
def _header_int(headers: Mapping[str, str], name: str | None) -> int | None:
    value = headers.get(name) if name else None
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return None


def _reset_at(headers: Mapping[str, str], name: str | None, fmt: str, now: float) -> float | None:
    value = headers.get(name) if name else None
    if value is None:
        return None
    if fmt == "duration":
        seconds = parse_duration(value)
        return None if seconds is None else now + seconds
    if fmt == "rfc3339":
        return parse_rfc3339(value)
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if fmt == "epoch":
        return number / 1000.0 if number > _EPOCH_MILLIS else number
    return now + max(0.0, number)


def parse_rate_limit_headers(
    headers: Mapping[str, str], names: RateLimitHeaders | None, now: float
) -> RateLimitInfo:
    """The configured quota headers (``headers`` lower-cased), plus ``retry-after`` always."""
    retry_after = parse_retry_after(headers, now)
    if names is None:
        return RateLimitInfo(retry_after_at=retry_after)
    fmt = names.reset_format
    return RateLimitInfo(
        requests_limit=_header_int(headers, names.requests_limit),
        requests_remaining=_header_int(headers, names.requests_remaining),
        requests_reset_at=_reset_at(headers, names.requests_reset, fmt, now),
        tokens_limit=_header_int(headers, names.tokens_limit),
        tokens_remaining=_header_int(headers, names.tokens_remaining),
        tokens_reset_at=_reset_at(headers, names.tokens_reset, fmt, now),
        retry_after_at=retry_after,
    )


def _dig(value: Any, path: str | None) -> int | None:
    """Follow a dotted path (numeric parts index lists) to a count."""
    if path is None:
        return None
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except (ValueError, OverflowError):
            return None
    return None


def extract_usage(body: Mapping[str, Any], paths: UsagePaths | None) -> Usage:
    """Usage found at the configured paths; zero tokens (requests only) without any."""
    if paths is None:
        return Usage()
    prompt = _dig(body, paths.prompt_tokens) or 0
    completion = _dig(body, paths.completion_tokens) or 0
    total = _dig(body, paths.total_tokens)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total if total is not None else prompt + completion,
    )


# --- bodies -------------------------------------------------------------------------------------
def body_as_dict(payload: bytes) -> dict[str, Any]:
    """Any answer as a dict: JSON objects as they are, other JSON as ``{"data": value}``, text
    as ``{"text": ...}``, so callers always get the same shape."""
    if not payload.strip():
        return {}
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {"text": payload.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"data": value}


def _error_detail(payload: bytes) -> tuple[str, str | None]:
    """A human message and an error code from an error body of unknown shape."""
    parsed = parse_json_object(payload)
    if parsed is not None:
        code: str | None = None
        for container in (parsed.get("error"), parsed):
            if not isinstance(container, dict):
                continue
            raw_code = container.get("code")
            if code is None and isinstance(raw_code, str | int) and not isinstance(raw_code, bool):
                code = str(raw_code)
            for name in _MESSAGE_FIELDS:
                value = container.get(name)
                if isinstance(value, str) and value.strip():
                    return value.strip(), code
        return payload.decode("utf-8", "replace").strip(), code
    return payload.decode("utf-8", "replace").strip(), None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _query_items(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A body as query parameters: lists repeat the name, objects travel as JSON."""
    items: list[tuple[str, str]] = []
    for name, value in data.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            items.extend((name, _query_value(v)) for v in value if v is not None)
        else:
            items.append((name, _query_value(value)))
    return items


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


# --- streaming ----------------------------------------------------------------------------------
class GenericSseStream(UpstreamStream):
    """Server-sent events, one JSON payload per ``data:`` event.

    Raw mode follows the SSE spec (an event's ``data:`` lines joined by newlines, ended by a
    blank line) and wraps payloads that are not JSON objects like :meth:`GenericHttpAdapter.send`
    does, so the router's JSON chunk reader never chokes. OpenAI mode reads a payload per line
    and requires ``[DONE]``, as OpenAI-compatible servers behave; ``[DONE]`` ends either.
    """

    def __init__(
        self,
        response: HttpStreamResponse,
        rate_limit: RateLimitInfo,
        secret: str,
        *,
        openai: bool,
        usage_paths: UsagePaths | None,
    ) -> None:
        self._response = response
        self.rate_limit = rate_limit
        self.usage: Usage | None = None
        self._secret = secret
        self._openai = openai
        self._usage_paths = usage_paths

    async def _payloads(self) -> AsyncGenerator[bytes, None]:
        lines: list[bytes] = []
        async for line in self._response.iter_lines():
            if line.startswith(b"data:"):
                data = line[5:]
                data = data[1:] if data.startswith(b" ") else data
                if self._openai:
                    yield data.strip()
                else:
                    lines.append(data)
            elif not line and lines:
                yield b"\n".join(lines)
                lines = []
        if lines:
            yield b"\n".join(lines)

    def _chunk(self, payload: bytes) -> bytes:
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            if self._openai:
                return payload
            return orjson.dumps({"text": payload.decode("utf-8", "replace")})
        if not isinstance(value, dict):
            return payload if self._openai else orjson.dumps({"data": value})
        if self._openai:
            error = value.get("error")
            if error and "choices" not in value:
                detail = error.get("message") if isinstance(error, dict) else error
                message = scrub_secret(f"upstream stream error: {detail}", self._secret)
                raise StreamInterruptedError(message)
            if isinstance(value.get("usage"), dict):
                self.usage = usage_from_openai(value["usage"])
        if self._usage_paths is not None:
            usage = extract_usage(value, self._usage_paths)
            if usage.total_tokens:
                self.usage = usage
        return payload

    async def _iterate(self) -> AsyncIterator[bytes]:
        done = False
        try:
            async with contextlib.aclosing(self._payloads()) as payloads:
                async for payload in payloads:
                    if payload.strip() == b"[DONE]":
                        done = True
                        break
                    yield self._chunk(payload)
        except TransportError as exc:
            # No exception chaining: nothing beyond this scrubbed message should travel.
            message = scrub_secret(f"upstream stream broke off: {exc}", self._secret)
            raise StreamInterruptedError(message) from None
        finally:
            await self._response.aclose()
        if self._openai and not done:
            raise StreamInterruptedError("upstream stream ended without [DONE]")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def aclose(self) -> None:
        await self._response.aclose()


# --- the adapter --------------------------------------------------------------------------------
class GenericHttpAdapter(HttpProviderAdapter):
    """Any HTTP API with per-key quota, driven by a :class:`GenericHttpConfig`.

    Results follow the adapter contract: :class:`UpstreamSuccess` with the answer as a dict, or
    a classified :class:`ProviderFailure` (never an exception) whose message holds no key.
    """

    kind = "generic"

    def __init__(
        self,
        config: GenericHttpConfig,
        *,
        transport: HttpTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config.base_url, transport=transport, clock=clock)
        self.config = config
        self.capabilities = config.effective_capabilities()
        self._openai = config.mode == "openai"
        self._prefix = config.effective_key_prefix()
        self._strip = config.effective_strip_fields()
        self._rate_headers = config.effective_rate_limit_headers()
        # The openai mode classifies as OpenAIAdapter does; only explicit entries override it.
        self._rules = config.status_rules(with_defaults=not self._openai)
        self._body_rules = tuple((text.lower(), kind) for text, kind in config.body_rules.items())
        self._data_in_query = not self._openai and config.method in QUERY_METHODS

    def __repr__(self) -> str:
        config = self.config
        return (
            f"GenericHttpAdapter(base_url={self.base_url!r}, mode={config.mode!r}, "
            f"key_in={config.key_in!r}, key_name={config.key_name!r})"
        )

    # --- requests ---------------------------------------------------------------------------
    def _url(self, path: str, items: list[tuple[str, str]], secret: str) -> str:
        path, _, path_query = path.partition("?")
        query = parse_qsl(path_query, keep_blank_values=True)
        query.extend(self.config.extra_query.items())
        query.extend(items)
        if self.config.key_in == "query":
            key_name = self.config.key_name
            query = [(name, value) for name, value in query if name != key_name]
            query.append((key_name, self._prefix + secret))
        url = self.base_url + path
        return f"{url}?{urlencode(query)}" if query else url

    def _headers(self, secret: str, *, has_body: bool, stream: bool) -> dict[str, str]:
        headers: dict[str, str] = {}
        if has_body:
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Accept"] = "text/event-stream"
        headers.update(self.config.extra_headers)
        if self.config.key_in == "header":
            headers[self.config.key_name] = self._prefix + secret
        return headers

    def _data(self, intent: RequestIntent, model: str, stream: bool) -> dict[str, Any]:
        strip = self._strip
        data = {k: v for k, v in intent.body.items() if k not in strip} if strip else intent.body
        if model != intent.model and "model" in data:
            data = {**data, "model": model}
        if stream and self._openai:
            options = data.get("stream_options")
            data = {
                **data,
                "stream": True,
                "stream_options": {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                },
            }
        elif stream and self.config.stream_params:
            data = {**data, **self.config.stream_params}
        return data

    def _build(self, intent: RequestIntent, secret: str, stream: bool) -> _Call | ProviderFailure:
        template = self.config.path_for(intent.endpoint, stream)
        if template is None:
            return ProviderFailure(
                FailureKind.BAD_REQUEST,
                None,
                f"this API has no {intent.endpoint.value} endpoint configured",
            )
        model = self.config.model_map.get(intent.model, intent.model)
        # "/" in a model name must not reach another path; ":" (e.g. "llama3:8b") may stay.
        path = template.format(model=quote(model, safe=":@"))
        data = self._data(intent, model, stream)
        method = "POST" if self._openai else self.config.method
        if self._data_in_query:
            url = self._url(path, _query_items(data), secret)
            return _Call(method, url, self._headers(secret, has_body=False, stream=stream), None)
        url = self._url(path, [], secret)
        headers = self._headers(secret, has_body=True, stream=stream)
        return _Call(method, url, headers, orjson.dumps(data))

    # --- responses --------------------------------------------------------------------------
    def _rate_limit(self, headers: Mapping[str, str]) -> RateLimitInfo:
        return parse_rate_limit_headers(headers, self._rate_headers, self._clock())

    def _body_rule(self, payload: bytes) -> FailureKind | None:
        if not self._body_rules:
            return None
        text = payload.decode("utf-8", "replace").lower()
        for needle, kind in self._body_rules:
            if needle in text:
                return kind
        return None

    def _classify(
        self, status: int, payload: bytes, rate_limit: RateLimitInfo, secret: str
    ) -> ProviderFailure:
        """What an error status means: ``status_map`` (most specific wins), then body rules."""
        mapped = kind_for_status(self._rules, status)
        if self._openai:
            failure = classify_openai_error(status, payload, rate_limit, secret)
            if mapped is not None:
                failure.kind = mapped
        else:
            detail, code = _error_detail(payload)
            detail = scrub_secret(detail, secret)[:_MAX_DETAIL]
            failure = ProviderFailure(
                mapped or FailureKind.PROVIDER_ERROR,
                status,
                f"upstream HTTP {status}: {detail}" if detail else f"upstream HTTP {status}",
                code=code,
                rate_limit=rate_limit,
            )
        ruled = self._body_rule(payload)
        if ruled is not None:
            failure.kind = ruled
        failure.message = scrub_secret(failure.message, secret)
        if failure.code is not None:
            failure.code = scrub_secret(failure.code, secret)
        if failure.param is not None:
            failure.param = scrub_secret(failure.param, secret)
        return failure

    def _success(self, status: int, payload: bytes, rate_limit: RateLimitInfo) -> AdapterResult:
        if self._openai:
            body = parse_json_object(payload)
            if body is None:
                return ProviderFailure(
                    FailureKind.PROVIDER_ERROR, status, "upstream returned a body that is not JSON"
                )
            if self.config.usage_path is None:
                usage = usage_from_openai(body.get("usage"))
                return UpstreamSuccess(body, usage, rate_limit, status, raw=payload)
        else:
            body = body_as_dict(payload)
        return UpstreamSuccess(
            body, extract_usage(body, self.config.usage_path), rate_limit, status
        )

    @staticmethod
    def _transport_failure(exc: TransportError, secret: str) -> ProviderFailure:
        failure = transport_failure(exc)
        failure.message = scrub_secret(failure.message, secret)
        return failure

    # --- the contract -----------------------------------------------------------------------
    async def send(self, intent: RequestIntent, secret: str, timeout: float) -> AdapterResult:
        call = self._build(intent, secret, stream=False)
        if isinstance(call, ProviderFailure):
            return call
        try:
            response = await self._transport.request(
                call.method, call.url, call.headers, call.body, timeout
            )
        except TransportError as exc:
            return self._transport_failure(exc, secret)
        rate_limit = self._rate_limit(response.headers)
        if not 200 <= response.status < 300:
            return self._classify(response.status, response.body, rate_limit, secret)
        return self._success(response.status, response.body, rate_limit)

    async def open_stream(self, intent: RequestIntent, secret: str, timeout: float) -> StreamResult:
        if not self.config.streams:
            return ProviderFailure(
                FailureKind.BAD_REQUEST, None, "streaming is not configured (`stream: sse`)"
            )
        call = self._build(intent, secret, stream=True)
        if isinstance(call, ProviderFailure):
            return call
        try:
            response = await self._transport.open_stream(
                call.method, call.url, call.headers, call.body, timeout
            )
        except TransportError as exc:
            return self._transport_failure(exc, secret)
        rate_limit = self._rate_limit(response.headers)
        if not 200 <= response.status < 300:
            try:
                payload = await response.read()
            except TransportError:
                payload = b""
            finally:
                await response.aclose()
            return self._classify(response.status, payload, rate_limit, secret)
        return GenericSseStream(
            response,
            rate_limit,
            secret,
            openai=self._openai,
            usage_paths=self.config.usage_path,
        )

    async def list_models(self, secret: str, timeout: float) -> list[str] | ProviderFailure:
        """OpenAI mode asks the server; a raw API has no such call, so its mapped names."""
        if not self._openai:
            return sorted(self.config.model_map)
        url = self._url(self.config.models_path, [], secret)
        headers = self._headers(secret, has_body=False, stream=False)
        try:
            response = await self._transport.request("GET", url, headers, None, timeout)
        except TransportError as exc:
            return self._transport_failure(exc, secret)
        if response.status != 200:
            rate_limit = self._rate_limit(response.headers)
            return self._classify(response.status, response.body, rate_limit, secret)
        data = (parse_json_object(response.body) or {}).get("data")
        if not isinstance(data, list):
            return []
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


# --- OpenAI-style providers ---------------------------------------------------------------------
#: Base URLs of well-known OpenAI-compatible servers, for ``openai_compatible(preset=...)``.
OPENAI_COMPATIBLE_PRESETS: dict[str, str] = {
    "vllm": "http://localhost:8000/v1",
    "ollama": "http://localhost:11434/v1",
    "lmstudio": "http://localhost:1234/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "mistral": "https://api.mistral.ai/v1",
}

#: Conservative: most compatible servers chat, complete, stream and call tools, but few embed
#: or see images. Claiming less only narrows routing; claiming more sends requests that fail.
COMPATIBLE_CAPABILITIES = ProviderCapabilities(
    chat=True,
    completions=True,
    embeddings=False,
    streaming=True,
    tools=True,
    vision=False,
    list_models=True,
)


def openai_compatible(
    base_url: str | None = None,
    *,
    preset: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    model_map: Mapping[str, str] | None = None,
    capabilities: ProviderCapabilities | None = None,
    transport: HttpTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> OpenAIAdapter:
    """An :class:`OpenAIAdapter` for a server that speaks OpenAI with ``Authorization: Bearer``.

    ``base_url`` is the URL before ``/chat/completions`` (``http://gpu1:8000/v1`` for vLLM,
    ``http://localhost:11434/v1`` for Ollama, ``https://api.groq.com/openai/v1``,
    ``https://api.together.xyz/v1``, ``https://openrouter.ai/api/v1``) or give a ``preset``
    name from :data:`OPENAI_COMPATIBLE_PRESETS`. ``model_map`` renames logical models to the
    server's names (``{"llama-70b": "meta-llama/Llama-3.3-70B-Instruct-Turbo"}``);
    ``extra_headers`` adds e.g. OpenRouter's ``HTTP-Referer``/``X-Title``. ``capabilities``
    defaults to :data:`COMPATIBLE_CAPABILITIES`; say so when a server embeds or sees images.

    Servers needing another key header or query parameters (Azure) take :func:`azure_openai` or
    a :class:`GenericHttpAdapter` in ``openai`` mode.
    """
    if preset is not None:
        if preset not in OPENAI_COMPATIBLE_PRESETS:
            known = ", ".join(sorted(OPENAI_COMPATIBLE_PRESETS))
            raise ValueError(f"unknown preset {preset!r}; known presets: {known}")
        if base_url is None:
            base_url = OPENAI_COMPATIBLE_PRESETS[preset]
    if base_url is None:
        raise ValueError("openai_compatible needs a base_url or a preset")
    return OpenAIAdapter(
        base_url,
        transport=transport,
        extra_headers=extra_headers,
        model_map=model_map,
        capabilities=capabilities or COMPATIBLE_CAPABILITIES,
        clock=clock,
    )


#: The latest GA data-plane version of the deployments API when this was written.
AZURE_API_VERSION = "2024-10-21"


def azure_openai(
    base_url: str,
    *,
    api_version: str | None = AZURE_API_VERSION,
    deployments: Mapping[str, str] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    capabilities: ProviderCapabilities | None = None,
    transport: HttpTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> GenericHttpAdapter:
    """Azure OpenAI: the key in an ``api-key`` header, not ``Authorization: Bearer``.

    ``base_url`` is the resource endpoint (``https://my-resource.openai.azure.com``).
    ``deployments`` maps logical models to deployment names (unmapped models are used as
    deployment names). With an ``api_version`` requests go to
    ``/openai/deployments/{deployment}/chat/completions?api-version=...``; with
    ``api_version=None`` to the version-less v1 API (``/openai/v1/chat/completions``, the
    deployment named in the body).
    """
    root = base_url.rstrip("/").removesuffix("/openai")
    common: dict[str, Any] = {
        "mode": "openai",
        "key_in": "header",
        "key_name": "api-key",
        "extra_headers": dict(extra_headers or {}),
        "model_map": dict(deployments or {}),
        "capabilities": capabilities,
    }
    if api_version is None:
        config = GenericHttpConfig(base_url=f"{root}/openai/v1", **common)
    else:
        config = GenericHttpConfig(
            base_url=f"{root}/openai",
            paths={
                Endpoint.CHAT: "/deployments/{model}/chat/completions",
                Endpoint.COMPLETIONS: "/deployments/{model}/completions",
                Endpoint.EMBEDDINGS: "/deployments/{model}/embeddings",
            },
            extra_query={"api-version": api_version},
            **common,
        )
    return GenericHttpAdapter(config, transport=transport, clock=clock)
