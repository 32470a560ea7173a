"""Authentication: client keys for ``/v1`` (with per-client rate limits), an admin token for
``/api/v1``.

Both compare SHA-256 digests with ``hmac.compare_digest``. A missing credential is 401 (with
``WWW-Authenticate``); a wrong admin token is 403 and a wrong client key 401, which is what the
``openai`` SDK maps to ``AuthenticationError``. The client check runs on the hot path as a plain
function (no middleware layer to pass through); the admin check is a FastAPI dependency so the
OpenAPI document advertises the bearer scheme.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Annotated

from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.middleware.error_handler import retry_after_value
from apikeyrouter_proxy.middleware.errors import ClientRateLimited, Forbidden, Unauthorized
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

if TYPE_CHECKING:
    from apikeyrouter_proxy.services.runtime import ProxyRuntime


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def authenticate_client(runtime: ProxyRuntime, ctx: RequestContext) -> None:
    """Check the caller's client key when clients are configured; apply its rate limit.

    Sets ``ctx.client_id``; raises :class:`Unauthorized` or :class:`ClientRateLimited`."""
    registry = runtime.clients
    if not registry.enabled:
        return
    token = ctx.bearer_token()
    if token is None:
        raise Unauthorized(
            "missing client key: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    client = registry.authenticate(token)
    if client is None:
        raise Unauthorized("invalid client key", code="invalid_api_key")
    ctx.client_id = client.id
    limiter = client.limiter
    if limiter is not None:
        wait = limiter.acquire()
        if wait is not None:
            runtime.metrics.client_rate_limited.labels(client.id).inc()
            raise ClientRateLimited(
                f"client {client.id!r} exceeded its limit of {limiter.limit} requests per minute",
                headers=[("retry-after", retry_after_value(wait).decode())],
            )


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The admin token configured as server.admin_token.",
)


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Gate for the management API. Without a configured token the API is disabled (403)."""
    runtime: ProxyRuntime = request.app.state.runtime
    expected = runtime.admin_token_digest
    if credentials is None:
        raise Unauthorized(
            "missing admin token: send 'Authorization: Bearer <admin token>'",
            code="missing_admin_token",
        )
    if expected is None:
        raise Forbidden("the management API is disabled: configure server.admin_token")
    if not hmac.compare_digest(token_digest(credentials.credentials), expected):
        raise Forbidden("invalid admin token", code="invalid_admin_token")
