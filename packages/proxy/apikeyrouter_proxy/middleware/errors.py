"""Errors the proxy itself raises (auth, limits, size, method), in OpenAI's error vocabulary.

The core's errors already know their status and OpenAI ``type``/``code``; these cover what only
the HTTP layer can say, so one function can render any error the same way.
"""

from __future__ import annotations

from collections.abc import Sequence


class ProxyError(Exception):
    status = 400
    error_type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = list(headers)


class Unauthorized(ProxyError):
    status = 401
    code = "invalid_api_key"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers=[("www-authenticate", "Bearer")])


class Forbidden(ProxyError):
    status = 403
    error_type = "permission_error"
    code = "forbidden"


class BodyTooLarge(ProxyError):
    status = 413
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the {limit}-byte limit")


class ClientRateLimited(ProxyError):
    status = 429
    error_type = "rate_limit_error"
    code = "client_rate_limit_exceeded"


class MethodNotAllowed(ProxyError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: str) -> None:
        super().__init__(
            f"method {method} is not allowed here; use {allowed}", headers=[("allow", allowed)]
        )


class NotReady(ProxyError):
    status = 503
    error_type = "service_unavailable"
    code = "not_ready"


class Unprocessable(ProxyError):
    """A well-formed request whose content is invalid (a policy, a budget): 422, like the
    schema validation errors FastAPI raises, with ``param`` naming the first bad field."""

    status = 422
    code = "invalid_request"


class RouteNotFound(ProxyError):
    status = 404
    error_type = "not_found_error"
    code = "not_found"


class ClientDisconnected(Exception):
    """The caller went away before its request body arrived; there is no one to answer."""
