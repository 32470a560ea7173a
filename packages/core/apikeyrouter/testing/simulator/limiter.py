"""Per-key runtime state and the admission decision.

Everything a request needs decided about its key happens in :func:`decide`, in one critical
section: pick a pre-admission fault, check the hard quota, check both buckets and charge them
together (a request that fits the RPM bucket but not the TPM bucket must not spend a request),
pick a post-admission fault, and snapshot the rate-limit headers of the resulting state.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .asgi import Headers
from .buckets import TokenBucket, format_reset
from .config import SimKeyConfig
from .faults import Fault, FaultSet
from .stats import KeyStats

__all__ = ["Decision", "HeaderFn", "KeyState", "Outcome", "decide"]


class Outcome(Enum):
    ADMITTED = "admitted"
    FAULT = "fault"  # a pre-admission (status) fault answers instead
    QUOTA = "quota"  # hard quota used up: 429 insufficient_quota
    RATE_LIMITED = "rate_limited"  # a bucket lacks capacity: 429 rate_limit_exceeded


@dataclass(slots=True)
class Decision:
    outcome: Outcome
    headers: Headers
    fault: Fault | None = None
    limit_kind: str = ""  # "requests" or "tokens" when rate limited
    limit: int = 0
    used: int = 0
    requested: int = 0
    wait_s: float = 0.0  # how long until the request would fit; inf if it never can


class KeyState:
    """The live state of one configured key: buckets, quota use, faults, statistics."""

    __slots__ = (
        "admissions",
        "config",
        "faults",
        "label",
        "quota_used",
        "rpm",
        "stats",
        "tpm",
    )

    def __init__(self, config: SimKeyConfig, label: str, now: float, keep: int) -> None:
        self.config = config
        self.label = label
        self.rpm = None if config.rpm is None else TokenBucket(config.rpm, now)
        self.tpm = None if config.tpm is None else TokenBucket(config.tpm, now)
        self.quota_used = 0
        self.faults = FaultSet()
        for fault in config.faults:
            self.faults.add(fault)
        self.stats = KeyStats()
        # Bounded so a long benchmark cannot grow memory without limit.
        self.admissions: deque[float] = deque(maxlen=keep)

    def allows(self, model: str) -> bool:
        """Whether the key's ``models`` restriction (if any) lets it use ``model``."""
        allowed = self.config.models
        return allowed is None or model in allowed

    def rate_headers(self, now: float) -> Headers:
        """``x-ratelimit-*`` headers for the configured limits only, as OpenAI sends them."""
        rpm, tpm = self.rpm, self.tpm
        if rpm is None and tpm is None:
            return []
        headers: Headers = []
        if rpm is not None:
            headers.append((b"x-ratelimit-limit-requests", b"%d" % rpm.capacity))
        if tpm is not None:
            headers.append((b"x-ratelimit-limit-tokens", b"%d" % tpm.capacity))
        if rpm is not None:
            headers.append((b"x-ratelimit-remaining-requests", b"%d" % rpm.remaining(now)))
        if tpm is not None:
            headers.append((b"x-ratelimit-remaining-tokens", b"%d" % tpm.remaining(now)))
        if rpm is not None:
            reset = format_reset(rpm.time_to_full(now)).encode()
            headers.append((b"x-ratelimit-reset-requests", reset))
        if tpm is not None:
            reset = format_reset(tpm.time_to_full(now)).encode()
            headers.append((b"x-ratelimit-reset-tokens", reset))
        return headers


HeaderFn = Callable[[KeyState, float], Headers]
"""Builds a wire format's rate-limit headers from a key's state at a clock reading."""


def decide(
    state: KeyState,
    tokens: int,
    now: float,
    rng: random.Random,
    limited: bool = True,
    headers: HeaderFn | None = None,
) -> Decision:
    """Decide one request on ``state``; the caller holds the provider lock.

    ``limited=False`` (model listing) only applies status faults: listing models is not
    charged against the per-minute limits. ``headers`` builds the rate-limit headers of the
    caller's wire format (default: OpenAI's ``x-ratelimit-*``), snapshotted in the same critical
    section as the decision so they describe exactly the state the decision left behind.
    """
    snapshot: HeaderFn = KeyState.rate_headers if headers is None else headers
    if state.faults:
        fault = state.faults.pick(True, rng)
        if fault is not None:
            return Decision(Outcome.FAULT, snapshot(state, now), fault)
    if not limited:
        return Decision(Outcome.ADMITTED, snapshot(state, now))
    quota = state.config.quota
    if quota is not None and state.quota_used >= quota:
        return Decision(Outcome.QUOTA, snapshot(state, now))
    rpm, tpm = state.rpm, state.tpm
    wait_requests = 0.0 if rpm is None else rpm.wait_time(1, now)
    wait_tokens = 0.0 if tpm is None else tpm.wait_time(tokens, now)
    if wait_requests > 0 or wait_tokens > 0:
        # Report the dimension that is short (requests first, like OpenAI), but advertise a
        # wait after which *both* buckets have room, so an obedient client succeeds next time.
        wait = max(wait_requests, wait_tokens)
        if wait_requests > 0 and rpm is not None:
            return Decision(
                Outcome.RATE_LIMITED, snapshot(state, now), None, "requests",
                rpm.capacity, rpm.used(now), 1, wait,
            )  # fmt: skip
        assert tpm is not None
        return Decision(
            Outcome.RATE_LIMITED, snapshot(state, now), None, "tokens",
            tpm.capacity, tpm.used(now), tokens, wait,
        )  # fmt: skip
    if rpm is not None:
        rpm.take(1, now)
    if tpm is not None:
        tpm.take(tokens, now)
    state.quota_used += 1
    state.admissions.append(now)
    state.stats.admitted += 1
    post = state.faults.pick(False, rng) if state.faults else None
    return Decision(Outcome.ADMITTED, snapshot(state, now), post)


def retry_after_headers(wait_s: float) -> Headers:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``; none if never."""
    if math.isinf(wait_s):
        return []
    ms = max(1, math.ceil(wait_s * 1000))
    return [(b"retry-after", b"%d" % math.ceil(ms / 1000)), (b"retry-after-ms", b"%d" % ms)]
