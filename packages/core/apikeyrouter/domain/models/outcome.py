"""What an upstream call meant, independent of which provider said it.

Adapters translate provider quirks into these; the core never branches on a provider name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429 requests/tokens: busy until reset
    QUOTA_EXHAUSTED = "quota_exhausted"  # out of money/quota until the period resets
    INVALID_KEY = "invalid_key"  # 401/403 revoked or wrong key
    MODEL_NOT_ALLOWED = "model_not_allowed"  # this key can't serve this model
    PROVIDER_ERROR = "provider_error"  # 5xx/529: provider or key unhealthy
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # reset, refused, dropped stream
    BAD_REQUEST = "bad_request"  # the request is wrong: return to caller
    CONTEXT_TOO_LONG = "context_too_long"
    CONTENT_POLICY = "content_policy"


#: Failures that say nothing about the key; the caller gets the upstream error.
CALLER_FAULTS: frozenset[FailureKind] = frozenset(
    {FailureKind.BAD_REQUEST, FailureKind.CONTEXT_TOO_LONG, FailureKind.CONTENT_POLICY}
)


@dataclass(slots=True)
class RateLimitInfo:
    """Quota facts a provider reported in its response headers. Times are epoch seconds."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_at: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_at: float | None = None
    retry_after_at: float | None = None

    def is_empty(self) -> bool:
        return (
            self.requests_limit is None
            and self.requests_remaining is None
            and self.tokens_limit is None
            and self.tokens_remaining is None
            and self.retry_after_at is None
        )

    def earliest_reset(self, now: float | None = None) -> float | None:
        """When a throttled key may be tried again: retry-after first, else the exhausted window.

        With ``now``, a retry-after already in the past (``retry-after: 0``) defers to the
        reset headers instead of hiding them.
        """
        if self.retry_after_at is not None and (now is None or self.retry_after_at > now):
            return self.retry_after_at
        candidates: list[float] = []
        if self.requests_remaining == 0 and self.requests_reset_at is not None:
            candidates.append(self.requests_reset_at)
        if self.tokens_remaining == 0 and self.tokens_reset_at is not None:
            candidates.append(self.tokens_reset_at)
        if candidates:
            return max(candidates)
        resets = [t for t in (self.requests_reset_at, self.tokens_reset_at) if t is not None]
        return min(resets) if resets else None


@dataclass(slots=True)
class ProviderFailure:
    """A failed upstream call, classified. ``message`` never contains key material."""

    kind: FailureKind
    status: int | None
    message: str
    code: str | None = None
    param: str | None = None
    error_type: str | None = None
    rate_limit: RateLimitInfo = field(default_factory=RateLimitInfo)
    body: bytes | None = None
