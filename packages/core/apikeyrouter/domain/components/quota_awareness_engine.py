"""Quota awareness: know how much each key has left, before the provider says no.

Sources, in order of authority: the provider's rate-limit headers (exact, as of the response),
our own window counters (estimated; they fill the gaps between responses and cover providers
that send nothing), and configured limits. Limits the operator did not configure are learned
from the headers. Consumption rates are smoothed to predict when a key will run dry; a key
predicted to run dry before its window frees up is de-prioritised early, so load spreads before
the wall, not after.

The hot path (ranking) reads only process memory: a local mirror of the windows plus the last
header snapshot. The store is read only to reconcile when the provider reports more usage than
this process knows of (another replica or another application using the same key).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from apikeyrouter.domain.interfaces.state_store import UNLIMITED, StateStore, WindowLimit
from apikeyrouter.domain.models.api_key import APIKey, KeyLimits, KeyState
from apikeyrouter.domain.models.outcome import RateLimitInfo
from apikeyrouter.domain.models.quota_state import (
    CapacityState,
    Confidence,
    ExhaustionPrediction,
    QuotaState,
    WindowUsage,
)
from apikeyrouter.domain.models.trusted import trusted
from apikeyrouter.infrastructure.state_store.window_counter import (
    BUCKETS_PER_WINDOW,
    WindowCounter,
)

MINUTE = 60.0
DAY = 86_400.0
MONTH = 30 * DAY
RATE_HALF_LIFE_SECONDS = 20.0
CONSTRAINED_AT = 0.5  # utilisation of the tightest window
CRITICAL_AT = 0.8


def configured_windows(limits: KeyLimits) -> list[WindowLimit]:
    pairs = (
        ("requests", MINUTE, limits.requests_per_minute),
        ("tokens", MINUTE, limits.tokens_per_minute),
        ("requests", DAY, limits.requests_per_day),
        ("tokens", DAY, limits.tokens_per_day),
        ("spend", MONTH, limits.spend_per_month),
    )
    return [WindowLimit(m, w, float(v)) for m, w, v in pairs if v is not None]


@dataclass(slots=True)
class HeaderSnapshot:
    """What the provider last said about one metric."""

    limit: float | None
    remaining: float
    reset_at: float | None
    observed_at: float
    sent_at_observation: float  # our cumulative charges of this metric when it was taken


#: ln 2 / half-life: the rate estimate's decay constant.
_DECAY_PER_SECOND = math.log(2) / RATE_HALF_LIFE_SECONDS


@dataclass(slots=True)
class _Rate:
    """Exponentially decaying rate estimate (units per second)."""

    value: float = 0.0
    updated_at: float | None = None

    def add(self, amount: float, now: float) -> None:
        if self.updated_at is None:
            self.updated_at = now
            self.value = 0.0
        elapsed = max(0.0, now - self.updated_at)
        decay = math.exp(-elapsed * _DECAY_PER_SECOND)
        # Rate of a decaying sum: amount spread over the half-life's mean lifetime.
        self.value = self.value * decay + amount * _DECAY_PER_SECOND
        self.updated_at = now

    def at(self, now: float) -> float:
        if self.updated_at is None:
            return 0.0
        elapsed = max(0.0, now - self.updated_at)
        return self.value * math.exp(-elapsed * _DECAY_PER_SECOND)


@dataclass(slots=True)
class KeyQuota:
    """Everything this process knows about one key's quota."""

    learned: dict[str, float] = field(default_factory=dict)  # metric -> per-minute limit
    sent: dict[str, float] = field(default_factory=dict)  # metric -> cumulative charges
    headers: dict[str, HeaderSnapshot] = field(default_factory=dict)
    local: dict[tuple[str, float], WindowCounter] = field(default_factory=dict)
    rates: dict[str, _Rate] = field(default_factory=dict)
    windows: tuple[WindowLimit, ...] | None = None  # cache of the effective windows
    limits_seen: KeyLimits | None = None
    headroom: float | None = None  # cache: valid until something about this key changes,
    headroom_until: float = 0.0  # or one bucket width passes (windows only move per bucket)


@dataclass(slots=True)
class TokenEstimateStats:
    """How far offline token estimates were from the provider's counts."""

    count: int = 0
    sum_abs_error: float = 0.0
    sum_rel_error: float = 0.0
    max_rel_error: float = 0.0
    sum_signed_rel_error: float = 0.0

    def record(self, estimated: int, actual: int) -> None:
        if actual <= 0:
            return
        error = estimated - actual
        relative = abs(error) / actual
        self.count += 1
        self.sum_abs_error += abs(error)
        self.sum_rel_error += relative
        self.sum_signed_rel_error += error / actual
        self.max_rel_error = max(self.max_rel_error, relative)

    def summary(self) -> dict[str, float]:
        n = max(1, self.count)
        return {
            "samples": float(self.count),
            "mean_abs_error_tokens": self.sum_abs_error / n,
            "mean_rel_error": self.sum_rel_error / n,
            "mean_signed_rel_error": self.sum_signed_rel_error / n,
            "max_rel_error": self.max_rel_error,
        }


class QuotaAwarenessEngine:
    def __init__(
        self,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        *,
        store_counters: Callable[[str, WindowLimit], WindowCounter] | None = None,
    ) -> None:
        """``store_counters`` gives the store's own window counter of a key when those live in
        this process (the in-memory store): they are then read directly instead of mirrored,
        one copy instead of two, and charging them is the store's job alone."""
        self._store = store
        self._clock = clock
        self._store_counters = store_counters
        self._keys: dict[str, KeyQuota] = {}
        self.token_estimates = TokenEstimateStats()

    def _quota(self, key_id: str) -> KeyQuota:
        quota = self._keys.get(key_id)
        if quota is None:
            quota = self._keys[key_id] = KeyQuota()
        return quota

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    # --- limits -----------------------------------------------------------------------------
    def effective_windows(self, key: APIKey) -> tuple[WindowLimit, ...]:
        """Configured limits, else limits learned from headers, else counted but unlimited.

        Requests and tokens per minute are always present so usage is counted from the first
        request, even before anything is known about the limit.
        """
        quota = self._quota(key.id)
        if quota.windows is not None and quota.limits_seen is key.limits:
            return quota.windows
        windows = configured_windows(key.limits)
        for metric in ("requests", "tokens"):
            if not any(w.metric == metric and w.window_seconds == MINUTE for w in windows):
                learned = quota.learned.get(metric)
                windows.append(WindowLimit(metric, MINUTE, learned or UNLIMITED))
        quota.windows = tuple(windows)
        quota.limits_seen = key.limits
        return quota.windows

    # --- local mirror of our own usage ------------------------------------------------------
    def _local(self, key_id: str, quota: KeyQuota, limit: WindowLimit) -> WindowCounter:
        if self._store_counters is not None:
            # Looked up each time, never kept: revoking a key replaces its counters.
            return self._store_counters(key_id, limit)
        window_id = (limit.metric, limit.window_seconds)
        counter = quota.local.get(window_id)
        if counter is None:
            counter = quota.local[window_id] = WindowCounter(limit.window_seconds)
        return counter

    def charged(self, key: APIKey, amounts: dict[str, float], at: float) -> None:
        """Mirror a reservation (or a commit's difference) in this process's view."""
        quota = self._quota(key.id)
        quota.headroom = None
        sent = quota.sent
        for metric, amount in amounts.items():
            sent[metric] = sent.get(metric, 0.0) + amount
        if self._store_counters is not None:
            return  # the store's counters are this process's view: the store charged them
        for limit in self.effective_windows(key):
            change = amounts.get(limit.metric)
            if change:
                self._local(key.id, quota, limit).add(at, change)

    def consumed(self, key: APIKey, requests: float, tokens: float, now: float) -> None:
        """Feed the consumption-rate estimates used by the prediction."""
        rates = self._quota(key.id).rates
        for metric, amount in (("requests", requests), ("tokens", tokens)):
            if amount:
                rate = rates.get(metric)
                if rate is None:  # not setdefault: that would build a _Rate on every call
                    rate = rates[metric] = _Rate()
                rate.add(amount, now)

    # --- provider signals -------------------------------------------------------------------
    async def observe(self, key: APIKey, info: RateLimitInfo, now: float) -> None:
        """Take in the provider's rate-limit headers from a response.

        Learns unconfigured limits, records the snapshot, and if the provider has seen more
        usage than our windows hold (someone else shares the key), charges the difference so
        our counters stay the conservative side of the truth.
        """
        if info.is_empty():
            return
        quota = self._quota(key.id)
        quota.headroom = None
        for metric, limit, remaining, reset_at in (
            ("requests", info.requests_limit, info.requests_remaining, info.requests_reset_at),
            ("tokens", info.tokens_limit, info.tokens_remaining, info.tokens_reset_at),
        ):
            if limit is not None and limit > 0 and quota.learned.get(metric) != limit:
                quota.learned[metric] = float(limit)
                quota.windows = None  # recompute effective windows
            if remaining is None:
                continue
            quota.headers[metric] = HeaderSnapshot(
                None if limit is None else float(limit),
                float(remaining),
                reset_at,
                now,
                quota.sent.get(metric, 0.0),
            )
            if limit is None:
                continue
            await self._reconcile(key, metric, float(limit) - float(remaining), now)

    async def _reconcile(self, key: APIKey, metric: str, provider_used: float, now: float) -> None:
        window = next(
            (
                w
                for w in self.effective_windows(key)
                if w.metric == metric and w.window_seconds == MINUTE
            ),
            None,
        )
        if window is None or provider_used <= 0:
            return
        quota = self._quota(key.id)
        if provider_used <= self._local(key.id, quota, window).used(now):
            return  # we already count at least as much: the usual case
        usage = await self._store.window_usage(key.id, [window], now)
        unseen = provider_used - (usage[0].used if usage else 0.0)
        if unseen > 0:
            await self._store.charge(key.id, window, unseen, now)
            if self._store_counters is None:
                self._local(key.id, quota, window).add(now, unseen)

    def record_token_estimate(self, estimated_prompt: int, actual_prompt: int) -> None:
        self.token_estimates.record(estimated_prompt, actual_prompt)

    # --- reading the state ------------------------------------------------------------------
    def _window_view(
        self,
        key: APIKey,
        limit: WindowLimit,
        now: float,
        counted: tuple[float, float | None] | None = None,
    ) -> tuple[float, float, Confidence, float | None]:
        """(used, limit, confidence, resets_at) for one window, from local memory only.
        ``counted``: the local counter's (used, resets_at) at ``now``, when already read."""
        quota = self._quota(key.id)
        if counted is None:
            counted = self._local(key.id, quota, limit).used_and_reset(now, limit.limit)
        used, resets_at = counted
        confidence = Confidence.ESTIMATED
        if limit.window_seconds == MINUTE:
            snapshot = quota.headers.get(limit.metric)
            if snapshot is not None and (snapshot.reset_at is None or snapshot.reset_at > now):
                # The provider's count as of the snapshot, plus what we sent since.
                since = max(0.0, quota.sent.get(limit.metric, 0.0) - snapshot.sent_at_observation)
                provider_used = (snapshot.limit or limit.limit) - snapshot.remaining + since
                if provider_used >= used:
                    used = provider_used
                    resets_at = snapshot.reset_at if snapshot.reset_at is not None else resets_at
                confidence = Confidence.EXACT
        if limit.limit >= UNLIMITED:
            confidence = Confidence.UNKNOWN
        return used, limit.limit, confidence, resets_at

    def headroom(self, key: APIKey) -> float:
        """Fraction left in the tightest known window, discounted when the key is predicted to
        run dry before that window frees up. Hot path: memory only, cached per key until the
        key is charged or observed, or its windows move on (one bucket width)."""
        now = self._clock()
        quota = self._keys.get(key.id)
        if quota is None:
            quota = self._quota(key.id)
        elif (
            quota.headroom is not None and now < quota.headroom_until and quota.windows is not None
        ):
            return quota.headroom
        best = 1.0
        width = MINUTE
        for limit in self.effective_windows(key):
            if limit.limit >= UNLIMITED:
                continue
            used, cap, _, resets_at = self._window_view(key, limit, now)
            left = max(0.0, 1.0 - used / cap)
            rate = self._quota(key.id).rates.get(limit.metric)
            if rate is not None and left > 0:
                pace = rate.at(now)
                remaining = cap - used
                until_reset = (resets_at - now) if resets_at is not None else limit.window_seconds
                if pace > 0 and remaining / pace < until_reset:
                    left *= (remaining / pace) / until_reset  # runs dry early: back off now
            best = min(best, left)
            width = min(width, limit.window_seconds / BUCKETS_PER_WINDOW)
        quota.headroom = best
        quota.headroom_until = now + width
        return best

    def capacity(self, key: APIKey, now: float | None = None) -> tuple[CapacityState, Confidence]:
        at = self._clock() if now is None else now
        by_state = self._capacity_by_state(key, at)
        if by_state is not None:
            return by_state
        views = (self._window_view(key, limit, at) for limit in self.effective_windows(key))
        return self._capacity_of(views)

    @staticmethod
    def _capacity_by_state(key: APIKey, at: float) -> tuple[CapacityState, Confidence] | None:
        """What the key's state alone says about its capacity (None: ask its windows)."""
        if key.state is KeyState.EXHAUSTED or key.state is KeyState.THROTTLED:
            if key.cooldown_until is not None and key.cooldown_until <= at:
                return CapacityState.RECOVERING, Confidence.ESTIMATED
            return CapacityState.EXHAUSTED, Confidence.EXACT
        if key.state is KeyState.RECOVERING:
            return CapacityState.RECOVERING, Confidence.ESTIMATED
        return None

    @staticmethod
    def _capacity_of(
        views: Iterable[tuple[float, float, Confidence, float | None]],
    ) -> tuple[CapacityState, Confidence]:
        """The capacity state of an available key from its windows' views (see
        :meth:`_window_view`): the most used window decides."""
        utilisation = 0.0
        confidence = Confidence.UNKNOWN
        for used, cap, window_confidence, _ in views:
            if cap >= UNLIMITED:
                continue
            share = used / cap
            if share >= utilisation:
                utilisation = share
                confidence = window_confidence
        if utilisation >= 1.0:
            return CapacityState.EXHAUSTED, confidence
        if utilisation >= CRITICAL_AT:
            return CapacityState.CRITICAL, confidence
        if utilisation >= CONSTRAINED_AT:
            return CapacityState.CONSTRAINED, confidence
        return CapacityState.ABUNDANT, confidence

    async def quota_state(self, key: APIKey) -> QuotaState:
        """The full picture for one key, from the shared store (for APIs and dashboards)."""
        now = self._clock()
        windows = list(self.effective_windows(key))
        usage = await self._store.window_usage(key.id, windows, now)
        return self._quota_state(key, windows, usage, now)

    async def quota_states(self, keys: Sequence[APIKey]) -> list[QuotaState]:
        """:meth:`quota_state` for many keys with one store read (metrics over large pools)."""
        now = self._clock()
        windows = [list(self.effective_windows(key)) for key in keys]
        usage = await self._store.window_usage_many(
            [(key.id, limits) for key, limits in zip(keys, windows, strict=True)], now
        )
        return [
            self._quota_state(key, limits, used, now)
            for key, limits, used in zip(keys, windows, usage, strict=True)
        ]

    def _quota_state(
        self, key: APIKey, windows: list[WindowLimit], usage: list[WindowUsage], now: float
    ) -> QuotaState:
        """The store's counts for a key's windows, corrected by what the provider reported."""
        quota = self._quota(key.id)
        shown: list[WindowUsage] = []
        views = []
        in_process = self._store_counters is not None  # the store's counters are the local ones
        for limit, window in zip(windows, usage, strict=True):
            counted = (window.used, window.resets_at) if in_process else None
            view = self._window_view(key, limit, now, counted)
            views.append(view)
            _, _, confidence, resets_at = view
            if limit.limit >= UNLIMITED:
                continue
            snapshot = quota.headers.get(limit.metric) if limit.window_seconds == MINUTE else None
            used = window.used
            if snapshot is not None and confidence is Confidence.EXACT:
                used = max(used, (snapshot.limit or limit.limit) - snapshot.remaining)
            shown.append(
                trusted(  # every value comes from a model already validated
                    WindowUsage,
                    metric=window.metric,
                    window_seconds=window.window_seconds,
                    limit=window.limit,
                    used=used,
                    reserved=window.reserved,
                    resets_at=resets_at or window.resets_at,
                    confidence=confidence,
                )
            )
        capacity, confidence = self._capacity_by_state(key, now) or self._capacity_of(views)
        return trusted(
            QuotaState,
            key_id=key.id,
            capacity=capacity,
            confidence=confidence,
            windows=shown,
            in_flight=0,
            cooldown_until=key.cooldown_until,
        )

    def predict_exhaustion(self, key: APIKey) -> ExhaustionPrediction:
        """Which window runs out first at the current smoothed pace, and when."""
        now = self._clock()
        best: ExhaustionPrediction | None = None
        quota = self._quota(key.id)
        for limit in self.effective_windows(key):
            if limit.limit >= UNLIMITED:
                continue
            used, cap, confidence, resets_at = self._window_view(key, limit, now)
            remaining = max(0.0, cap - used)
            rate = quota.rates.get(limit.metric)
            pace = rate.at(now) if rate is not None else 0.0
            at = now + remaining / pace if pace > 0 else None
            if remaining <= 0:
                at = now
            prediction = ExhaustionPrediction(
                key_id=key.id,
                metric=limit.metric,
                window_seconds=limit.window_seconds,
                remaining=remaining,
                rate_per_second=pace,
                predicted_exhaustion_at=at,
                resets_at=resets_at,
                exhausts_before_reset=at is not None and (resets_at is None or at < resets_at),
                confidence=confidence,
            )
            if best is None or (
                at is not None
                and (best.predicted_exhaustion_at is None or at < best.predicted_exhaustion_at)
            ):
                best = prediction
        return best or ExhaustionPrediction(key_id=key.id)
