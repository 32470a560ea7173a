"""The exception hierarchy. Every message is safe to show: none ever carries key material.

Each error knows the HTTP status and OpenAI error ``type``/``code`` it maps to, so the proxy can
answer in OpenAI's shape without a lookup table of its own.
"""

from __future__ import annotations

from typing import Any


class ApiKeyRouterError(Exception):
    status: int = 500
    error_type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code

    def to_openai_error(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigurationError(ApiKeyRouterError):
    status = 500
    error_type = "configuration_error"


class InvalidRequestError(ApiKeyRouterError):
    """The caller's request is malformed; ``param`` names the offending field."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class KeyNotFoundError(ApiKeyRouterError):
    status = 404
    error_type = "not_found_error"
    code = "key_not_found"


class ProviderNotFoundError(ApiKeyRouterError):
    status = 404
    error_type = "not_found_error"
    code = "provider_not_found"


class ModelNotFoundError(ApiKeyRouterError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class InvalidStateTransitionError(ApiKeyRouterError):
    status = 409
    error_type = "conflict_error"
    code = "invalid_state_transition"


class NoKeyAvailableError(ApiKeyRouterError):
    """No key can serve the request now. ``retry_after`` (seconds) says when one will."""

    status = 429
    error_type = "rate_limit_error"
    code = "no_key_available"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reasons: dict[str, int] | None = None,
        attempts: int = 0,
        attempt_records: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reasons = reasons or {}
        self.attempts = attempts
        #: AttemptRecord of every upstream call the request made (for metrics and logs).
        self.attempt_records: list[Any] = attempt_records or []


class ProvidersUnavailableError(NoKeyAvailableError):
    """Every candidate failed with provider errors: the providers are down, not busy."""

    status = 503
    error_type = "service_unavailable"
    code = "providers_unavailable"


class RequestDeadlineExceededError(ApiKeyRouterError):
    status = 504
    error_type = "timeout_error"
    code = "deadline_exceeded"


class UpstreamError(ApiKeyRouterError):
    """The upstream rejected the request itself (bad request, context too long, policy)."""

    error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        key_id: str | None = None,
        provider_id: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        if error_type:
            self.error_type = error_type
        self.key_id = key_id
        self.provider_id = provider_id


class StreamInterruptedError(ApiKeyRouterError):
    """A stream broke after bytes had reached the caller; it cannot be retried transparently."""

    status = 502
    error_type = "upstream_error"
    code = "stream_interrupted"
