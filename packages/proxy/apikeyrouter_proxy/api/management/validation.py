"""Turning the core's validation failures into the management API's 422 answers.

Messages name each field at fault and never include the value sent (it could be anything the
caller pasted, secrets included); policy problems are the exception, worded by the core's
policy loader, which quotes short offending values (policies hold no secrets, and "got
'provdier:openai'" is what makes the typo obvious).
"""

from __future__ import annotations

from apikeyrouter.domain.models.policy import PolicyValidationError
from pydantic import ValidationError

from apikeyrouter_proxy.middleware.errors import Unprocessable


def from_validation_error(exc: ValidationError) -> Unprocessable:
    parts: list[str] = []
    first: str | None = None
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in error["loc"])
        first = first or field or None
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {message}" if field else message)
    return Unprocessable("; ".join(parts) or "invalid body", param=first)


def from_policy_error(exc: PolicyValidationError) -> Unprocessable:
    return Unprocessable(exc.message, param=exc.param, code="invalid_policy")
