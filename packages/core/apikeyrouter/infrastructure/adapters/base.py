"""Shared plumbing for HTTP adapters: one transport, JSON helpers, transport-failure mapping.

The request skeleton every provider adapter repeats (call the transport, turn a dead connection
into a failure, classify a non-200 reply, insist on a JSON body) lives on
:class:`HttpProviderAdapter` as small template helpers. Each adapter supplies only what is its
own: URLs, headers, and an :data:`ErrorClassifier` that knows what the provider's errors mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.request_context import Endpoint
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.domain.models.trusted import trusted
from apikeyrouter.infrastructure.transport.aiohttp_transport import AiohttpTransport
from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
    TransportError,
    TransportTimeout,
)
from apikeyrouter.utils.exceptions import InvalidRequestError

#: Turns a non-200 reply into its meaning: ``(status, body, lower-cased headers, secret)``. The
#: secret is passed so the classifier can redact it from the provider's message.
ErrorClassifier = Callable[[int, bytes, Mapping[str, str], str], ProviderFailure]

#: Reads one page of a model listing: the ids on it, and the query parameters that fetch the
#: next page (``None`` on the last page).
ModelPageReader = Callable[[dict[str, Any]], tuple[list[str], dict[str, str] | None]]

#: Enough for any real catalogue; the cap stops a server that always returns a cursor from
#: keeping a caller in a loop.
MAX_MODEL_PAGES = 20


def transport_failure(exc: Exception) -> ProviderFailure:
    """A request that produced no usable response."""
    if isinstance(exc, TransportTimeout):
        return ProviderFailure(FailureKind.TIMEOUT, None, f"upstream timed out: {exc}")
    return ProviderFailure(FailureKind.CONNECTION, None, f"upstream connection failed: {exc}")


def not_json_failure(status: int = 200) -> ProviderFailure:
    """A success status whose body is not a JSON object: the provider broke its contract, so
    the key is not to blame and another key or provider may well answer."""
    return ProviderFailure(
        FailureKind.PROVIDER_ERROR, status, "upstream returned a body that is not JSON"
    )


def invalid_request_failure(exc: InvalidRequestError) -> ProviderFailure:
    """A request the provider's API cannot express, reported as the caller's fault.

    Translating adapters find this out before any call, so no key is spent (or blamed) on it.
    """
    return ProviderFailure(
        FailureKind.BAD_REQUEST,
        400,
        exc.message,
        code=exc.code,
        param=exc.param,
        error_type=exc.error_type,
    )


def unsupported_endpoint(provider: str, endpoint: Endpoint) -> ProviderFailure:
    """An endpoint this provider has no equivalent for, as an OpenAI-style caller fault."""
    return ProviderFailure(
        FailureKind.BAD_REQUEST,
        400,
        f"the {provider} adapter does not serve {endpoint.value}",
        code="unsupported_endpoint",
        error_type="invalid_request_error",
    )


async def read_error_body(response: HttpStreamResponse) -> bytes:
    """The body of a stream that answered with an error status, and the stream closed.

    The body is only wanted for classifying the error, so a read that breaks off yields ``b""``
    (the status alone still classifies) rather than a second, less useful failure.
    """
    try:
        return await response.read()
    except TransportError:
        return b""
    finally:
        await response.aclose()


def model_ids(entries: list[Any], field: str) -> list[str]:
    """The ``field`` of every object in a model listing; malformed entries are skipped so one
    odd entry does not cost the caller the whole list."""
    return [str(entry[field]) for entry in entries if isinstance(entry, dict) and field in entry]


def parse_json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def usage_from_openai(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    total = int(raw.get("total_tokens") or prompt + completion)
    return trusted(Usage, prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


# UpstreamCall and JsonReply are built per call and never changed: plain slotted dataclasses,
# since a frozen one costs three times as much to construct.


@dataclass(slots=True)
class UpstreamCall:
    """What every request of one adapter call shares, handed to the template helpers at once.

    ``secret`` rides along although ``headers`` already carry it, because the classifier must
    redact it from whatever the provider echoes back.
    """

    headers: Mapping[str, str]
    secret: str
    timeout: float
    classify: ErrorClassifier


@dataclass(slots=True)
class JsonReply:
    """A 200 reply whose body is a JSON object; the headers stay for rate-limit parsing."""

    payload: dict[str, Any]
    headers: Mapping[str, str]
    raw: bytes  # the body ``payload`` was parsed from


class HttpProviderAdapter(ProviderAdapter):
    """Base for adapters that talk HTTP through a shared :class:`HttpTransport`."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: HttpTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._transport = transport if transport is not None else AiohttpTransport()
        self._clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def close(self) -> None:
        await self._transport.close()

    # --- template helpers -----------------------------------------------------------------
    # Each returns either what the adapter needs next or an already classified failure, so an
    # adapter method reads as "build the request, call a helper, return the failure or translate".

    async def _exchange(
        self, method: str, url: str, body: bytes | None, call: UpstreamCall
    ) -> HttpResponse | ProviderFailure:
        """One non-streaming request that answered 200, or why it did not."""
        try:
            response = await self._transport.request(method, url, call.headers, body, call.timeout)
        except TransportError as exc:
            return transport_failure(exc)
        if response.status != 200:
            return call.classify(response.status, response.body, response.headers, call.secret)
        return response

    async def _post_json(
        self, url: str, body: bytes, call: UpstreamCall
    ) -> JsonReply | ProviderFailure:
        """POST ``body`` and return the JSON object the provider answered with."""
        response = await self._exchange("POST", url, body, call)
        if isinstance(response, ProviderFailure):
            return response
        payload = parse_json_object(response.body)
        if payload is None:
            return not_json_failure()
        return JsonReply(payload, response.headers, response.body)

    async def _open_stream(
        self, url: str, body: bytes, call: UpstreamCall
    ) -> HttpStreamResponse | ProviderFailure:
        """POST ``body`` for a stream; an error status is read, closed and classified here, so
        the adapter only ever holds a stream that answered 200."""
        try:
            response = await self._transport.open_stream(
                "POST", url, call.headers, body, call.timeout
            )
        except TransportError as exc:
            return transport_failure(exc)
        if response.status != 200:
            payload = await read_error_body(response)
            return call.classify(response.status, payload, response.headers, call.secret)
        return response

    async def _list_model_pages(
        self, url: str, query: Mapping[str, str], read_page: ModelPageReader, call: UpstreamCall
    ) -> list[str] | ProviderFailure:
        """Every model id across a cursor-paginated listing, starting from ``query``.

        A page that is not JSON ends the listing with what was gathered so far: the ids already
        seen are still true, and listing models is advisory, not worth failing a key over.
        """
        models: list[str] = []
        page_query = dict(query)
        for _ in range(MAX_MODEL_PAGES):
            response = await self._exchange("GET", f"{url}?{urlencode(page_query)}", None, call)
            if isinstance(response, ProviderFailure):
                return response
            ids, next_query = read_page(parse_json_object(response.body) or {})
            models.extend(ids)
            if next_query is None:
                break
            page_query.update(next_query)
        return models
