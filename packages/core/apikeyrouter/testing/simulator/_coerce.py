"""Strict scalar coercion for configuration coming from JSON, YAML and the command line.

CLI values arrive as strings and JSON values as numbers; both must end up as the same typed
config, while booleans (which Python treats as ints) and junk are rejected with a clear message.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool", "as_float", "as_int", "opt_float", "opt_int"]


def as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer") from None


def as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number") from None


def opt_int(value: Any, name: str) -> int | None:
    return None if value is None else as_int(value, name)


def opt_float(value: Any, name: str) -> float | None:
    return None if value is None else as_float(value, name)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"{name} must be a boolean")
