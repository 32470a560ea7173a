"""Prices, cost estimates, budgets and their periods.

Money is USD; prices are per 1,000,000 tokens because that is how every provider publishes
them, so a table can be checked against a pricing page by eye. Budget periods are calendar
aligned in UTC (a day budget resets at 00:00 UTC, a month budget on the 1st) so that every
replica, and every operator reading a dashboard, agrees on which period a request belongs to.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from apikeyrouter.utils.exceptions import ApiKeyRouterError, ConfigurationError

TOKENS_PER_PRICE_UNIT = 1_000_000
DAY_SECONDS = 86_400
#: Window of a month budget's counter. The counter id already changes every calendar month;
#: the window only has to be long enough that nothing expires inside the longest month.
MONTH_WINDOW_SECONDS = 32 * DAY_SECONDS

BudgetScope = Literal["global", "provider", "key", "model", "client"]
BudgetPeriod = Literal["day", "month", "custom"]
Enforcement = Literal["hard", "soft", "shadow"]
PriceMode = Literal["chat", "completion", "embedding"]


class PricingError(ConfigurationError):
    """A pricing table or override is invalid; the message names the model and the field."""

    code = "invalid_pricing"


class LongContextPrice(BaseModel):
    """Rates for a request whose prompt exceeds ``threshold_tokens``.

    Gemini 2.5 Pro and Claude Sonnet 4.x bill the *whole* request (input, cached input and
    output) at these rates once the prompt, cached tokens included, is past the threshold.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_tokens: int = Field(gt=0)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class ModelPrice(BaseModel):
    """USD per 1M tokens for one model.

    ``cached_input`` is omitted when the provider publishes no cache-hit price; cached tokens
    are then billed at ``input``, which can only over-state spend, never under-state it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    provider: str | None = None
    aliases: tuple[str, ...] = ()
    mode: PriceMode = "chat"
    long_context: LongContextPrice | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _finite(self) -> Self:
        rates = [self.input, self.output, self.cached_input]
        if self.long_context is not None:
            lc = self.long_context
            rates += [lc.input, lc.output, lc.cached_input]
        if any(r is not None and not math.isfinite(r) for r in rates):
            raise ValueError("prices must be finite numbers")
        return self

    def rates_for(self, prompt_tokens: int) -> tuple[float, float, float]:
        """(input, cached input, output) rates for a request with ``prompt_tokens``."""
        lc = self.long_context
        if lc is not None and prompt_tokens > lc.threshold_tokens:
            cached = lc.cached_input if lc.cached_input is not None else lc.input
            return lc.input, cached, lc.output
        cached = self.cached_input if self.cached_input is not None else self.input
        return self.input, cached, self.output


class CostEstimate(BaseModel):
    """A cost before (estimate) or after (actual) a call.

    ``usd`` is ``None`` and ``priced`` False for a model the table does not know: an unknown
    cost is reported as unknown, never as a made-up number.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    usd: float | None
    priced: bool
    priced_as: str | None = Field(
        default=None, description="The pricing-table entry used, after alias/date resolution."
    )

    @property
    def reserve_usd(self) -> float:
        """The amount to charge budget counters: the cost, or 0 when the model is unpriced."""
        return self.usd if self.usd is not None else 0.0


class ReconciliationStats(BaseModel):
    """How far pre-call estimates were from the real cost.

    Estimates assume the full ``max_tokens`` completion, so they should err high: a positive
    ``bias_usd`` is by design, a negative one means budgets could be overshot.
    """

    count: int = 0
    estimated_usd_total: float = 0.0
    actual_usd_total: float = 0.0
    mean_absolute_error_usd: float = 0.0
    bias_usd: float = Field(default=0.0, description="Mean of estimate minus actual.")
    mean_relative_error: float = 0.0
    max_relative_error: float = 0.0
    unpriced_count: int = 0


class Budget(BaseModel):
    """A spending limit on one scope over a calendar period.

    ``hard`` rejects a request before it spends past the limit (enforced atomically by the
    state store's reservation), ``soft`` lets it through and raises a warning event, ``shadow``
    only counts, so a limit can be tried on real traffic before it is switched on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # No ':' so the counter id ``budget:{id}:{period}`` is unambiguous.
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    scope: BudgetScope
    scope_value: str | None = Field(default=None, min_length=1)
    limit_usd: float = Field(gt=0)
    period: BudgetPeriod
    period_seconds: int | None = Field(default=None, ge=60)
    enforcement: Enforcement = "hard"
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not math.isfinite(self.limit_usd):
            raise ValueError("limit_usd must be a finite number")
        if self.scope == "global" and self.scope_value is not None:
            raise ValueError("scope_value must be empty for a global budget")
        if self.scope != "global" and self.scope_value is None:
            raise ValueError(f"scope_value is required for a {self.scope} budget")
        if self.period == "custom" and self.period_seconds is None:
            raise ValueError("period_seconds is required for a custom period")
        if self.period != "custom" and self.period_seconds is not None:
            raise ValueError("period_seconds is only allowed with period 'custom'")
        return self


class BudgetStatus(BaseModel):
    """A budget's spend in its current period."""

    budget: Budget
    spent_usd: float
    remaining_usd: float
    period_index: str
    period_start: float
    period_end: float
    exceeded: bool = Field(description="Spend has reached or passed the limit.")


class BudgetEvent(BaseModel):
    """Raised after the fact for a soft (warn) or shadow (would have blocked) budget."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["soft_budget_exceeded", "shadow_budget_exceeded"]
    budget_id: str
    scope: BudgetScope
    scope_value: str | None
    enforcement: Enforcement
    limit_usd: float
    spent_usd: float
    period_index: str
    period_start: float
    period_end: float
    at: float

    @property
    def message(self) -> str:
        return (
            f"budget '{self.budget_id}' ({self.enforcement}) reached: spent "
            f"${self.spent_usd:.4f} of ${self.limit_usd:.2f} in period {self.period_index}"
        )


class BudgetExceededError(ApiKeyRouterError):
    """A hard budget has no room for this request.

    HTTP 429 with type ``insufficient_quota`` is how OpenAI itself reports an exhausted
    billing quota, so OpenAI-compatible clients already treat it as "out of money, not busy";
    a 402 would reach them as an unknown status. ``retry_after`` is the time until the budget's
    period ends (``None`` when the request could never fit, being larger than the whole
    limit). It is deliberately not a :class:`NoKeyAvailableError`: the router waits and fails
    over on those, and neither helps against a spending limit.
    """

    status = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(
        self,
        message: str,
        *,
        budget_id: str,
        retry_after: float | None,
        limit_usd: float,
        spent_usd: float,
        period_end: float,
    ) -> None:
        super().__init__(message)
        self.budget_id = budget_id
        self.retry_after = retry_after
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.period_end = period_end


class UnpricedSpendLimitError(ApiKeyRouterError):
    """A spending limit applies to every key ranked to serve, but the model has no price.

    A hard budget and a key's ``spend_per_month`` count dollars; a model the price table does
    not know would count as free and pass any limit, which is the one thing a spending limit
    must not allow. The request is refused instead (HTTP 400: retrying cannot help), naming the
    fix: price the model with a pricing override (0 is a valid price for a model that really
    costs nothing). Soft and shadow budgets only report, so they do not refuse.
    """

    status = 400
    error_type = "invalid_request_error"
    code = "model_not_priced"


# --- periods -----------------------------------------------------------------------------------


def _utc(now: float) -> datetime:
    return datetime.fromtimestamp(now, tz=UTC)


def period_index(budget: Budget, now: float) -> str:
    """The period ``now`` falls in: ``2026-11-29`` (day), ``2026-11`` (month), or the integer
    ``floor(now / period_seconds)`` (custom, aligned to the Unix epoch)."""
    if budget.period == "day":
        return _utc(now).strftime("%Y-%m-%d")
    if budget.period == "month":
        return _utc(now).strftime("%Y-%m")
    assert budget.period_seconds is not None  # guaranteed by validation
    return str(math.floor(now / budget.period_seconds))


def period_bounds(budget: Budget, now: float) -> tuple[float, float]:
    """Start (inclusive) and end (exclusive) of the period ``now`` falls in, as Unix times."""
    if budget.period == "custom":
        assert budget.period_seconds is not None
        start = math.floor(now / budget.period_seconds) * budget.period_seconds
        return float(start), float(start + budget.period_seconds)
    moment = _utc(now)
    if budget.period == "day":
        begin = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return begin.timestamp(), begin.timestamp() + DAY_SECONDS
    begin = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if begin.month == 12:
        end = begin.replace(year=begin.year + 1, month=1)
    else:
        end = begin.replace(month=begin.month + 1)
    return begin.timestamp(), end.timestamp()


def window_seconds(budget: Budget) -> float:
    """Window of the budget's counter: at least one full period, so nothing expires early."""
    if budget.period == "day":
        return float(DAY_SECONDS)
    if budget.period == "month":
        return float(MONTH_WINDOW_SECONDS)
    assert budget.period_seconds is not None
    return float(budget.period_seconds)
