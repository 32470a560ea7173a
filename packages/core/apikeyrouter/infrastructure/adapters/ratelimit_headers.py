"""Parsing of provider rate-limit signals into absolute times.

Formats: OpenAI reset durations (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``), Anthropic RFC 3339
timestamps, ``retry-after`` as seconds or an HTTP date, and ``retry-after-ms``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from apikeyrouter.domain.models.outcome import RateLimitInfo

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """Parse a Go-style duration as OpenAI sends it; a bare number means seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, number) if math.isfinite(number) else None
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        return None
    return total


def parse_rfc3339(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Absolute time given by ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value_ms = float(millis)
        except ValueError:
            value_ms = math.nan
        if math.isfinite(value_ms):
            return now + max(0.0, value_ms) / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return now + max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def int_header(headers: Mapping[str, str], name: str) -> int | None:
    """A count header such as ``x-ratelimit-remaining-requests``; unusable values read as absent,
    since a wrong quota is worse than none."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # "inf" and "1e999" are not numbers of requests
        return None


def _reset(headers: Mapping[str, str], name: str, now: float) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return now + seconds
    return parse_rfc3339(value)


def parse_openai_headers(headers: Mapping[str, str], now: float) -> RateLimitInfo:
    """``headers`` must have lower-cased names."""
    return RateLimitInfo(
        requests_limit=int_header(headers, "x-ratelimit-limit-requests"),
        requests_remaining=int_header(headers, "x-ratelimit-remaining-requests"),
        requests_reset_at=_reset(headers, "x-ratelimit-reset-requests", now),
        tokens_limit=int_header(headers, "x-ratelimit-limit-tokens"),
        tokens_remaining=int_header(headers, "x-ratelimit-remaining-tokens"),
        tokens_reset_at=_reset(headers, "x-ratelimit-reset-tokens", now),
        retry_after_at=parse_retry_after(headers, now),
    )
