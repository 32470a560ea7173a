"""Unit tests for parsing provider rate-limit headers into absolute times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from apikeyrouter.infrastructure.adapters.ratelimit_headers import (
    parse_duration,
    parse_openai_headers,
    parse_retry_after,
    parse_rfc3339,
)
from hypothesis import given
from hypothesis import strategies as st

NOW = 1_700_000_000.0
JAN_1_2024 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


# --- parse_duration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("1500ns", 0.0000015),
        ("12", 12.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("0s", 0.0),
        ("  7s \n", 7.0),
        ("1.25m", 75.0),
        ("1s500ms", 1.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    result = parse_duration(text)
    assert result is not None
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "garbage", "s", "ms", "1x", "1s garbage", "x1s", "1 s", "1.5.5s", "h1", "1s-"],
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    assert parse_duration(text) is None


def test_parse_duration_negative_number_is_clamped_to_zero() -> None:
    assert parse_duration("-5") == 0.0


@given(
    hours=st.integers(min_value=0, max_value=48),
    minutes=st.integers(min_value=0, max_value=59),
    millis=st.integers(min_value=0, max_value=59_999),
)
def test_parse_duration_round_trips_go_durations(hours: int, minutes: int, millis: int) -> None:
    text = f"{hours}h{minutes}m{millis / 1000:g}s"
    result = parse_duration(text)
    assert result is not None
    assert result == pytest.approx(hours * 3600 + minutes * 60 + millis / 1000)


# --- parse_rfc3339 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T00:00:00Z", JAN_1_2024),
        ("2024-01-01T00:00:00+00:00", JAN_1_2024),
        ("2024-01-01T02:00:00+02:00", JAN_1_2024),
        ("2023-12-31T19:00:00-05:00", JAN_1_2024),
        ("2024-01-01T00:00:00.250Z", JAN_1_2024 + 0.25),
        (" 2024-01-01T00:00:01Z ", JAN_1_2024 + 1),
    ],
)
def test_parse_rfc3339(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "tomorrow", "2024-13-01T00:00:00Z", "12s"])
def test_parse_rfc3339_rejects_garbage(text: str) -> None:
    assert parse_rfc3339(text) is None


# --- parse_retry_after ----------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert parse_retry_after({"retry-after": "20"}, NOW) == NOW + 20
    assert parse_retry_after({"retry-after": "1.5"}, NOW) == NOW + 1.5
    assert parse_retry_after({"retry-after": "0"}, NOW) == NOW


def test_retry_after_negative_is_clamped_to_now() -> None:
    assert parse_retry_after({"retry-after": "-3"}, NOW) == NOW


def test_retry_after_http_date() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    expected = datetime(2015, 10, 21, 7, 28, tzinfo=UTC).timestamp()
    assert parse_retry_after(headers, NOW) == expected


def test_retry_after_http_date_with_offset() -> None:
    headers = {"retry-after": "Mon, 01 Jan 2024 01:00:00 +0100"}
    assert parse_retry_after(headers, NOW) == JAN_1_2024


def test_retry_after_ms_takes_precedence() -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "20"}
    assert parse_retry_after(headers, NOW) == pytest.approx(NOW + 1.5)
    assert parse_retry_after({"retry-after-ms": "250"}, NOW) == pytest.approx(NOW + 0.25)


def test_invalid_retry_after_ms_falls_back_to_retry_after() -> None:
    headers = {"retry-after-ms": "soon", "retry-after": "20"}
    assert parse_retry_after(headers, NOW) == NOW + 20


def test_retry_after_absent_or_garbage_is_none() -> None:
    assert parse_retry_after({}, NOW) is None
    assert parse_retry_after({"retry-after": "later"}, NOW) is None
    assert parse_retry_after({"retry-after": ""}, NOW) is None
    assert parse_retry_after({"retry-after-ms": "x"}, NOW) is None


# --- parse_openai_headers -------------------------------------------------------------------


def test_parse_full_openai_headers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29500",
        "x-ratelimit-reset-tokens": "6m0s",
        "retry-after": "3",
    }
    info = parse_openai_headers(headers, NOW)
    assert info.requests_limit == 500
    assert info.requests_remaining == 499
    assert info.requests_reset_at == pytest.approx(NOW + 0.12)
    assert info.tokens_limit == 30000
    assert info.tokens_remaining == 29500
    assert info.tokens_reset_at == NOW + 360
    assert info.retry_after_at == NOW + 3
    assert not info.is_empty()


def test_parse_missing_openai_headers() -> None:
    info = parse_openai_headers({"content-type": "application/json"}, NOW)
    assert info.is_empty()
    assert info.requests_reset_at is None
    assert info.tokens_reset_at is None
    assert info.earliest_reset() is None


def test_parse_partial_openai_headers() -> None:
    headers = {
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1.5s",
    }
    info = parse_openai_headers(headers, NOW)
    assert info.requests_limit is None
    assert info.requests_remaining is None
    assert info.requests_reset_at is None
    assert info.tokens_limit is None
    assert info.tokens_remaining == 0
    assert info.tokens_reset_at == NOW + 1.5
    assert info.retry_after_at is None
    assert info.earliest_reset() == NOW + 1.5


def test_parse_openai_headers_with_garbage_values() -> None:
    headers = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "12.0",
        "x-ratelimit-reset-requests": "whenever",
        "x-ratelimit-reset-tokens": "2024-01-01T00:00:00Z",
    }
    info = parse_openai_headers(headers, NOW)
    assert info.requests_limit is None
    assert info.requests_remaining == 12
    assert info.requests_reset_at is None
    assert info.tokens_reset_at == JAN_1_2024  # RFC 3339 reset times are accepted too


def test_parse_openai_headers_with_rfc3339_offset_reset() -> None:
    reset = datetime(2024, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=3)))
    headers = {"x-ratelimit-reset-requests": reset.isoformat()}
    assert parse_openai_headers(headers, NOW).requests_reset_at == JAN_1_2024


# --- regressions ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e999"])
def test_parse_openai_headers_survives_overflowing_numbers(value: str) -> None:
    info = parse_openai_headers({"x-ratelimit-limit-requests": value}, NOW)
    assert info.requests_limit is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e999"])
def test_non_finite_retry_hints_are_rejected(value: str) -> None:
    assert parse_duration(value) is None
    assert parse_retry_after({"retry-after": value}, NOW) is None
