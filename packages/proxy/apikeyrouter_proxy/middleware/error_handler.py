"""Every error, rendered the OpenAI way: ``{"error": {"message", "type", "param", "code"}}``.

Known errors keep their status and wording (they are written to be safe to show). Anything else
becomes a 500 with a generic message and the request id, while the exception, traceback
included, goes to the server log through the core's redacting logger: the client learns that
something broke and how to refer to it, never what or where.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from apikeyrouter.domain.models.cost_model import BudgetExceededError
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.resilient_store import (
    StoreUnavailableError,
    is_store_error,
)
from apikeyrouter.utils.exceptions import (
    ApiKeyRouterError,
    NoKeyAvailableError,
    RequestDeadlineExceededError,
    StreamInterruptedError,
    UpstreamError,
)
from apikeyrouter_proxy.middleware.context import SCOPE_KEY, RequestContext, new_request_id
from apikeyrouter_proxy.middleware.errors import ProxyError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

_log = get_logger("apikeyrouter.proxy.errors")

#: Core errors with status >= 500 whose message is meaningful to the caller.
_EXPLAINED_5XX = (
    NoKeyAvailableError,
    RequestDeadlineExceededError,
    StreamInterruptedError,
    UpstreamError,
    StoreUnavailableError,
)
#: The shared state store cannot serve (Redis away and failing closed, MongoDB contended):
#: 503 with Retry-After, the message says so (it names no host, key or value).
_STORE_CODES = frozenset({"store_unavailable", "state_store_contention"})
#: Retry-After for store trouble that did not say when to come back.
STORE_RETRY_AFTER_SECONDS = 1.0
Headers = list[tuple[bytes, bytes]]


def error_payload(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def internal_error_payload(request_id: str) -> dict[str, Any]:
    return error_payload(
        f"internal error; quote request id {request_id} when reporting it",
        "api_error",
        code="internal_error",
    )


def retry_after_value(seconds: float) -> bytes:
    """Whole seconds, rounded up (a client obeying it must not come back too early)."""
    return str(max(1, math.ceil(seconds))).encode()


def render_error(exc: BaseException, request_id: str) -> tuple[int, bytes, Headers]:
    """Status, JSON body and extra headers for ``exc``. Unknown exceptions must be logged by
    the caller (see :func:`log_unexpected`); this only decides what the client sees."""
    headers: Headers = []
    if isinstance(exc, ProxyError):
        headers = [(k.encode(), v.encode()) for k, v in exc.headers]
        payload = error_payload(exc.message, exc.error_type, param=exc.param, code=exc.code)
        return exc.status, orjson.dumps(payload), headers
    if isinstance(exc, ApiKeyRouterError):
        status = exc.status
        store_trouble = exc.code in _STORE_CODES
        if status >= 500 and not (isinstance(exc, _EXPLAINED_5XX) or store_trouble):
            return 500, orjson.dumps(internal_error_payload(request_id)), headers
        if isinstance(exc, NoKeyAvailableError) and exc.retry_after is not None:
            headers.append((b"retry-after", retry_after_value(exc.retry_after)))
        elif store_trouble:
            retry_after = getattr(exc, "retry_after", None) or STORE_RETRY_AFTER_SECONDS
            headers.append((b"retry-after", retry_after_value(retry_after)))
        elif isinstance(exc, BudgetExceededError):
            # Out of money until the period ends: the openai SDK must not retry it at once
            # (it would for a 429), and Retry-After says when the budget resets, if ever.
            headers.append((b"x-should-retry", b"false"))
            if exc.retry_after is not None:
                headers.append((b"retry-after", retry_after_value(exc.retry_after)))
        if isinstance(exc, UpstreamError):
            if exc.key_id:
                headers.append((b"x-apikeyrouter-key-id", exc.key_id.encode()))
            if exc.provider_id:
                headers.append((b"x-apikeyrouter-provider", exc.provider_id.encode()))
        return status, orjson.dumps(exc.to_openai_error()), headers
    if is_store_error(exc):
        # A store without an outage wrapper (MongoDB alone) failed: the request may well
        # succeed in a moment, which a 503 with Retry-After says and a 500 would not.
        headers.append((b"retry-after", retry_after_value(STORE_RETRY_AFTER_SECONDS)))
        payload = error_payload(
            "the state store is unavailable; try again shortly",
            "service_unavailable",
            code="store_unavailable",
        )
        return 503, orjson.dumps(payload), headers
    return 500, orjson.dumps(internal_error_payload(request_id)), headers


def is_expected(exc: BaseException) -> bool:
    if isinstance(exc, ProxyError):
        return True
    if isinstance(exc, ApiKeyRouterError):
        return exc.status < 500 or isinstance(exc, _EXPLAINED_5XX)
    return False


def log_unexpected(exc: BaseException, request_id: str, path: str) -> None:
    """Server-side record of a failure the client only saw as a generic 500 (redacted)."""
    _log.error(
        "unhandled_error",
        request_id=request_id,
        path=path,
        error_type=type(exc).__name__,
        exc_info=exc,
    )


def _request_id(request: Request) -> str:
    ctx = request.scope.get(SCOPE_KEY)
    return ctx.request_id if isinstance(ctx, RequestContext) else new_request_id()


def _json(status: int, body: bytes, headers: Headers) -> Response:
    response = Response(body, status_code=status, media_type="application/json")
    for name, value in headers:
        response.headers[name.decode()] = value.decode()
    return response


def install_error_handlers(app: FastAPI) -> None:
    """OpenAI-shaped errors for the FastAPI side (management API, health, metrics)."""

    async def known(request: Request, exc: Exception) -> Response:
        return _json(*render_error(exc, _request_id(request)))

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        message = str(first.get("msg", "invalid request"))
        if param:
            message = f"{param}: {message}"
        payload = error_payload(
            message, "invalid_request_error", param=param, code="invalid_request"
        )
        return Response(orjson.dumps(payload), status_code=422, media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        payload = error_payload(str(exc.detail), error_type, code=f"http_{exc.status_code}")
        response = Response(
            orjson.dumps(payload), status_code=exc.status_code, media_type="application/json"
        )
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this; the gateway logs it once, with the request id.
        return _json(500, orjson.dumps(internal_error_payload(_request_id(request))), [])

    app.add_exception_handler(ProxyError, known)
    app.add_exception_handler(ApiKeyRouterError, known)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
