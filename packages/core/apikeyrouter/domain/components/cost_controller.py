"""Cost estimates, actual cost, reconciliation, and budgets on any scope.

Pure logic: the controller holds a pricing table and the budget definitions, and turns them
into numbers and :class:`SharedCounter` s. Spend itself lives in the state store, charged in the
same atomic reservation as the key's own windows, so a hard budget holds across concurrent
requests and across replicas; the controller never counts spend after the fact.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from apikeyrouter.domain.interfaces.state_store import SharedCounter, WindowLimit
from apikeyrouter.domain.models.cost_model import (
    TOKENS_PER_PRICE_UNIT,
    Budget,
    BudgetEvent,
    BudgetExceededError,
    BudgetStatus,
    CostEstimate,
    ModelPrice,
    PricingError,
    ReconciliationStats,
    period_bounds,
    period_index,
    window_seconds,
)
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.domain.models.trusted import trusted
from apikeyrouter.utils.bounded_cache import remember

#: Limit given to soft and shadow budget counters: they are charged like hard ones (so their
#: spend is in the store) but never block. Finite, because every store must carry it (Lua too).
NON_BLOCKING_LIMIT_USD = 1e18
#: Slack on a hard limit so float rounding never refuses the request that fits exactly
#: (ten charges of $0.002 sum to a hair over $0.02 in binary floating point).
HARD_LIMIT_TOLERANCE_USD = 1e-9
SPEND_METRIC = "spend"

# Snapshot suffixes that name a version of a priced model: -2024-08-06, -20250514, @20250514
# (Vertex), -latest, -0613 (OpenAI MMDD), -001 (Gemini stable versions).
_VERSION_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest|-\d{4}|-\d{3})$")
_RESOLVE_CACHE_LIMIT = 4096  # model names come from callers: bound what they can make us keep
_UNPRICED_LIMIT = 1024


def parse_model_price(name: str, raw: ModelPrice | Mapping[str, Any]) -> ModelPrice:
    """Validate one pricing entry; errors name the model and the field."""
    if not isinstance(name, str) or not name.strip():
        raise PricingError(f"pricing entry with an invalid model name: {name!r}")
    if isinstance(raw, ModelPrice):
        return raw
    if not isinstance(raw, Mapping):
        raise PricingError(f"pricing for model '{name}': expected a mapping of prices")
    try:
        return ModelPrice.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"])
            where = f"field '{field}': " if field else ""
            problems.append(f"{where}{err['msg']}")
        raise PricingError(f"pricing for model '{name}': " + "; ".join(problems)) from None


def _cached_tokens(usage: Usage, prompt_tokens: int) -> int:
    """``prompt_tokens_details.cached_tokens`` (every adapter maps its cache hits there)."""
    extra = usage.__pydantic_extra__  # adapters put provider-specific usage fields there
    details = extra.get("prompt_tokens_details") if extra else None
    value = details.get("cached_tokens") if isinstance(details, Mapping) else None
    if value is None and details is not None and not isinstance(details, Mapping):
        value = getattr(details, "cached_tokens", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(int(value), prompt_tokens))


def _waits_longer(error: BudgetExceededError, than: BudgetExceededError | None) -> bool:
    """Whether ``error`` blocks for longer than ``than`` (``None`` retry_after: forever)."""
    if than is None or error.retry_after is None:
        return True
    return than.retry_after is not None and error.retry_after > than.retry_after


def _check_usd(amount: float) -> float:
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"usd amount must be a finite number >= 0, got {amount!r}")
    return float(amount)


class CostController:
    """Prices requests and turns budgets into atomically enforced shared counters.

    With ``pricing=None`` the table shipped with the package is loaded (the file is read by
    ``infrastructure.config.pricing_loader``; pass a mapping to keep this object I/O-free).
    """

    def __init__(
        self,
        pricing: Mapping[str, ModelPrice] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if pricing is None:
            from apikeyrouter.infrastructure.config.pricing_loader import load_default_pricing

            pricing = load_default_pricing()
        self._clock = clock
        self._prices: dict[str, ModelPrice] = {}
        self._aliases: dict[str, str] = {}
        self._resolved: dict[tuple[str, str | None], str | None] = {}
        self._unpriced: set[str] = set()
        self._budgets: dict[str, Budget] = {}
        self._global: list[Budget] = []
        self._scoped: dict[str, dict[str, list[Budget]]] = {}
        self._reported: dict[str, str] = {}  # budget id -> period already warned about
        self._n = 0
        self._unpriced_reconciled = 0
        self._est_total = 0.0
        self._act_total = 0.0
        self._abs_error = 0.0
        self._signed_error = 0.0
        self._rel_error = 0.0
        self._rel_n = 0
        self._max_rel = 0.0
        self._install({name: parse_model_price(name, p) for name, p in pricing.items()})

    @classmethod
    def default(cls, *, clock: Callable[[], float] = time.time) -> CostController:
        """A controller over the pricing table shipped with the package."""
        return cls(None, clock=clock)

    # --- pricing table ---------------------------------------------------------------------
    def _install(self, prices: dict[str, ModelPrice]) -> None:
        aliases: dict[str, str] = {}
        for name, price in prices.items():
            for alias in price.aliases:
                if alias not in prices:  # a real entry always beats someone's alias
                    aliases[alias] = name
        self._prices = prices
        self._aliases = aliases
        self._resolved.clear()
        self._unpriced = {m for m in self._unpriced if self._lookup(m, None) is None}
        self._reindex_budgets()

    def load_overrides(self, overrides: Mapping[str, ModelPrice | Mapping[str, Any]]) -> None:
        """Replace or add whole entries (a partial entry is an error, not a merge: a stale
        ``cached_input`` next to a new ``input`` would silently misprice)."""
        parsed = {name: parse_model_price(name, raw) for name, raw in overrides.items()}
        self._install({**self._prices, **parsed})

    def models(self) -> list[str]:
        return sorted(self._prices)

    def unpriced_models(self) -> frozenset[str]:
        """Model names asked about that the table could not price (reported, never guessed)."""
        return frozenset(self._unpriced)

    def price_for(self, model: str, provider: str | None = None) -> ModelPrice | None:
        """Lookup order, first hit wins, per name ``provider/model`` then ``model`` (then the
        last path segment of a ``vendor/model`` name): exact entry, then alias; then the same
        with a snapshot suffix removed (``-2024-08-06``, ``-20250514``, ``-latest``...).
        The provider-qualified name goes first so an operator can price one provider's copy
        of a model (Azure, a reseller) differently from the vendor's own."""
        name = self._resolve(model, provider)
        return None if name is None else self._prices[name]

    def canonical_model(self, model: str, provider: str | None = None) -> str | None:
        """The pricing-table entry ``model`` resolves to, or ``None``."""
        return self._resolve(model, provider)

    def _resolve(self, model: str, provider: str | None) -> str | None:
        key = (model, provider)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        name = remember(self._resolved, key, self._lookup(model, provider), _RESOLVE_CACHE_LIMIT)
        if name is None and len(self._unpriced) < _UNPRICED_LIMIT:
            self._unpriced.add(model)
        return name

    def _lookup(self, model: str, provider: str | None) -> str | None:
        names: list[str] = []
        bases = [model]
        if "/" in model:
            bases.append(model.rsplit("/", 1)[1])
        if model.lower() != model:
            bases.append(model.lower())
        for base in bases:
            if provider:
                names.append(f"{provider}/{base}")
            names.append(base)
        for candidate in names:
            if (hit := self._direct(candidate)) is not None:
                return hit
        for candidate in names:
            stripped = _VERSION_SUFFIX.sub("", candidate)
            if stripped != candidate and (hit := self._direct(stripped)) is not None:
                return hit
        return None

    def _direct(self, name: str) -> str | None:
        if name in self._prices:
            return name
        return self._aliases.get(name)

    # --- estimates -------------------------------------------------------------------------
    def estimate(
        self,
        model: str,
        prompt_tokens: int,
        max_completion_tokens: int,
        provider: str | None = None,
    ) -> CostEstimate:
        """Upper-bound cost before the call: every prompt token at the uncached rate and the
        full ``max_completion_tokens``, because a reservation that is too small can overshoot
        a budget while one that is too large is only returned at commit."""
        if prompt_tokens < 0 or max_completion_tokens < 0:
            raise ValueError("token counts must be >= 0")
        name = self._resolve(model, provider)
        usd: float | None = None
        if name is not None:
            rate_in, _, rate_out = self._prices[name].rates_for(prompt_tokens)
            usd = (
                prompt_tokens * rate_in + max_completion_tokens * rate_out
            ) / TOKENS_PER_PRICE_UNIT
        return trusted(  # every value checked above: hot path, no re-validation
            CostEstimate,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=max_completion_tokens,
            cached_tokens=0,
            usd=usd,
            priced=name is not None,
            priced_as=name,
        )

    def actual(self, model: str, usage: Usage, provider: str | None = None) -> CostEstimate:
        """Cost of a finished call from its ``usage``; cache hits at ``cached_input``."""
        prompt = max(0, usage.prompt_tokens)
        completion = max(0, usage.completion_tokens)
        cached = _cached_tokens(usage, prompt)
        name = self._resolve(model, provider)
        usd: float | None = None
        if name is not None:
            rate_in, rate_cached, rate_out = self._prices[name].rates_for(prompt)
            usd = (
                (prompt - cached) * rate_in + cached * rate_cached + completion * rate_out
            ) / TOKENS_PER_PRICE_UNIT
        return trusted(
            CostEstimate,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            usd=usd,
            priced=name is not None,
            priced_as=name,
        )

    def reconcile(self, estimate: CostEstimate, actual: CostEstimate) -> None:
        """Record how far an estimate was from the actual cost of the same request."""
        if estimate.usd is None or actual.usd is None:
            self._unpriced_reconciled += 1
            return
        diff = estimate.usd - actual.usd
        self._n += 1
        self._est_total += estimate.usd
        self._act_total += actual.usd
        self._abs_error += abs(diff)
        self._signed_error += diff
        if actual.usd > 0:
            rel = abs(diff) / actual.usd
            self._rel_error += rel
            self._rel_n += 1
            self._max_rel = max(self._max_rel, rel)

    def stats(self) -> ReconciliationStats:
        n = self._n
        return ReconciliationStats(
            count=n,
            estimated_usd_total=self._est_total,
            actual_usd_total=self._act_total,
            mean_absolute_error_usd=self._abs_error / n if n else 0.0,
            bias_usd=self._signed_error / n if n else 0.0,
            mean_relative_error=self._rel_error / self._rel_n if self._rel_n else 0.0,
            max_relative_error=self._max_rel,
            unpriced_count=self._unpriced_reconciled,
        )

    # --- budget registry -------------------------------------------------------------------
    def add_budget(self, budget: Budget) -> None:
        """Add, or replace the budget with the same id (spend carries over: the counter id
        depends on the id and the period, not on the limit)."""
        self._budgets[budget.id] = budget
        self._reindex_budgets()

    @property
    def has_budgets(self) -> bool:
        """Lets the hot path skip budget look-ups entirely when none are defined."""
        return bool(self._budgets)

    def get_budget(self, budget_id: str) -> Budget | None:
        return self._budgets.get(budget_id)

    def remove_budget(self, budget_id: str) -> bool:
        removed = self._budgets.pop(budget_id, None) is not None
        if removed:
            self._reported.pop(budget_id, None)
            self._reindex_budgets()
        return removed

    def budgets(self) -> list[Budget]:
        return [self._budgets[k] for k in sorted(self._budgets)]

    def _reindex_budgets(self) -> None:
        self._global = []
        self._scoped = {"provider": {}, "key": {}, "model": {}, "client": {}}
        for budget in self.budgets():
            if budget.scope == "global":
                self._global.append(budget)
                continue
            assert budget.scope_value is not None
            values = {budget.scope_value}
            if budget.scope == "model":
                # A budget on "claude-sonnet-4-0" also covers "claude-sonnet-4-20250514".
                values.add(self._lookup(budget.scope_value, None) or budget.scope_value)
            for value in values:
                self._scoped[budget.scope].setdefault(value, []).append(budget)

    def budgets_for(
        self,
        *,
        provider_id: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        client_id: str | None = None,
    ) -> list[Budget]:
        """Every budget a request with these facts counts against, in scope order global,
        provider, key, model, client (ids sorted within a scope). Dictionary lookups only."""
        found = list(self._global)
        seen = {b.id for b in found}
        wanted: list[tuple[str, Iterable[str]]] = [
            ("provider", (provider_id,) if provider_id else ()),
            ("key", (key_id,) if key_id else ()),
            ("model", self._model_names(model, provider_id) if model else ()),
            ("client", (client_id,) if client_id else ()),
        ]
        for scope, values in wanted:
            index = self._scoped.get(scope, {})
            for value in values:
                for budget in index.get(value, ()):
                    if budget.id not in seen:
                        seen.add(budget.id)
                        found.append(budget)
        return found

    def _model_names(self, model: str, provider_id: str | None) -> tuple[str, ...]:
        names = [model]
        for canonical in (self._resolve(model, provider_id), self._resolve(model, None)):
            if canonical is not None and canonical not in names:
                names.append(canonical)
        return tuple(names)

    # --- budget enforcement ----------------------------------------------------------------
    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    @staticmethod
    def counter_id(budget: Budget, now: float) -> str:
        """``budget:{id}:{period_index}``: a new counter every period, so a period's spend
        never leaks into the next however the store's sliding window is bucketed."""
        return f"budget:{budget.id}:{period_index(budget, now)}"

    @staticmethod
    def window_limit(budget: Budget) -> WindowLimit:
        """Hard budgets block at their limit; soft and shadow ones are counted the same way
        but with a limit nothing reaches, so their spend is in the store and never blocks."""
        if budget.enforcement == "hard":
            limit = budget.limit_usd + HARD_LIMIT_TOLERANCE_USD
        else:
            limit = NON_BLOCKING_LIMIT_USD
        return WindowLimit(SPEND_METRIC, window_seconds(budget), limit)

    def budget_counter(
        self, budget: Budget, now: float | None = None, amount: float = 0.0
    ) -> SharedCounter:
        """The counter of ``budget``'s current period. Read its spend with
        ``store.window_usage(c.counter_id, [c.limit], now)[0].used``."""
        at = self._now(now)
        return SharedCounter(self.counter_id(budget, at), self.window_limit(budget), amount)

    def shared_counters(
        self, budgets: Iterable[Budget], usd_estimate: float, now: float | None = None
    ) -> tuple[SharedCounter, ...]:
        """Counters to add to the reservation: charged with ``usd_estimate`` in the same
        atomic step as the key's windows; committing the reservation with ``{"spend": actual}``
        corrects every one of them to the real cost.

        Soft budgets are included (non-blocking) as well as hard and shadow ones: it is the
        only way their spend reaches the store for :meth:`check_soft` to read."""
        amount = _check_usd(usd_estimate)
        at = self._now(now)
        return tuple(self.budget_counter(b, at, amount) for b in budgets)

    def period_bounds(self, budget: Budget, now: float | None = None) -> tuple[float, float]:
        return period_bounds(budget, self._now(now))

    def budget_status(self, budget: Budget, spent: float, now: float | None = None) -> BudgetStatus:
        at = self._now(now)
        start, end = period_bounds(budget, at)
        return BudgetStatus(
            budget=budget,
            spent_usd=spent,
            remaining_usd=max(0.0, budget.limit_usd - spent),
            period_index=period_index(budget, at),
            period_start=start,
            period_end=end,
            exceeded=spent >= budget.limit_usd,
        )

    def check_hard(
        self, budget: Budget, spent: float, usd_estimate: float, now: float | None = None
    ) -> BudgetExceededError | None:
        """The error to return when hard ``budget`` cannot fit ``usd_estimate`` more; the same
        arithmetic as the store's reservation. Use it to explain a refused reservation, or as
        a cheap pre-check (the reservation remains the authority under concurrency)."""
        if budget.enforcement != "hard":
            return None
        amount = _check_usd(usd_estimate)
        if spent + amount <= budget.limit_usd + HARD_LIMIT_TOLERANCE_USD:
            return None
        at = self._now(now)
        _, end = period_bounds(budget, at)
        never = amount > budget.limit_usd + HARD_LIMIT_TOLERANCE_USD
        retry_after = None if never else max(0.0, end - at)
        scope = f"{budget.scope}={budget.scope_value}" if budget.scope_value else budget.scope
        tail = (
            "the request alone costs more than the whole limit"
            if never
            else f"it resets in {retry_after:.0f}s"
        )
        return BudgetExceededError(
            f"budget '{budget.id}' ({scope}) would be exceeded: ${spent:.4f} of "
            f"${budget.limit_usd:.2f} spent in period {period_index(budget, at)}, this request "
            f"needs about ${amount:.4f}; {tail}",
            budget_id=budget.id,
            retry_after=retry_after,
            limit_usd=budget.limit_usd,
            spent_usd=spent,
            period_end=end,
        )

    def blocking_budget_error(
        self,
        budgets: Iterable[Budget],
        spent_by_budget: Mapping[str, float],
        usd_estimate: float,
        now: float | None = None,
    ) -> BudgetExceededError | None:
        """Of the hard budgets that block, the one the request must wait longest for (a
        budget it can never fit beats any wait), or ``None`` if no budget blocks."""
        at = self._now(now)
        worst: BudgetExceededError | None = None
        for budget in budgets:
            error = self.check_hard(budget, spent_by_budget.get(budget.id, 0.0), usd_estimate, at)
            if error is None:
                continue
            if _waits_longer(error, worst):
                worst = error
            if worst is not None and worst.retry_after is None:
                break
        return worst

    def check_soft(
        self, budget: Budget, spent: float, now: float | None = None
    ) -> BudgetEvent | None:
        """After a commit: an event the first time a soft or shadow budget reaches its limit
        in a period (once per period per process, so a hot budget does not flood the log)."""
        if budget.enforcement == "hard" or spent < budget.limit_usd:
            return None
        at = self._now(now)
        index = period_index(budget, at)
        if self._reported.get(budget.id) == index:
            return None
        self._reported[budget.id] = index
        start, end = period_bounds(budget, at)
        soft = budget.enforcement == "soft"
        return BudgetEvent(
            kind="soft_budget_exceeded" if soft else "shadow_budget_exceeded",
            budget_id=budget.id,
            scope=budget.scope,
            scope_value=budget.scope_value,
            enforcement=budget.enforcement,
            limit_usd=budget.limit_usd,
            spent_usd=spent,
            period_index=index,
            period_start=start,
            period_end=end,
            at=at,
        )

    def soft_budget_events(
        self, spent_by_budget: Mapping[str, float], now: float | None = None
    ) -> list[BudgetEvent]:
        """:meth:`check_soft` for every known budget whose spend is given."""
        at = self._now(now)
        events = []
        for budget_id in sorted(spent_by_budget):
            budget = self._budgets.get(budget_id)
            if budget is not None:
                event = self.check_soft(budget, spent_by_budget[budget_id], at)
                if event is not None:
                    events.append(event)
        return events
