"""Structured JSON logs (structlog) with a last-line defence against leaked secrets.

Code logs key ids, never key material; the redaction processor additionally scrubs anything
that looks like a credential from every string value, in case an upstream echoes one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from apikeyrouter.utils.redaction import redact

LOGGER_NAME = "apikeyrouter"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name, value in event_dict.items():
        event_dict[name] = _scrub(value)
    return event_dict


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # first: a disabled level costs almost nothing
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    structlog.processors.format_exc_info,
    redact_secrets,
    structlog.processors.JSONRenderer(),
]


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send the library's JSON lines to ``stream`` (stderr by default). Idempotent.

    Without this call the library logs through stdlib ``logging`` under ``apikeyrouter`` and
    the application decides where (and whether) lines go.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def get_logger(name: str = LOGGER_NAME) -> Any:
    """A structlog logger over stdlib logging; independent of global structlog config.

    Bound once here: the lazy proxy ``wrap_logger`` returns would build a new bound logger on
    every call, which the per-request paths cannot afford."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    ).bind()
