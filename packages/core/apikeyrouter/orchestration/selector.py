"""Choosing a key for one attempt: candidates, ranking, and the atomic reservation.

Everything before the reservation reads process memory only. The reservation is one store call
that charges the key's windows, every budget in scope and the client's limits together, on the
first ranked candidate with room, so concurrent requests (and replicas) never overshoot.
"""

from __future__ import annotations

import asyncio
import time

from apikeyrouter.domain.components.candidate_filter import CandidateSet, collect_candidates
from apikeyrouter.domain.components.token_estimator import (
    completion_allowance,
    estimate_prompt_tokens,
)
from apikeyrouter.domain.interfaces.state_store import (
    CircuitState,
    ReservationRefusal,
    ReservationRequest,
    SharedCounter,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.domain.models.cost_model import Budget, CostEstimate, UnpricedSpendLimitError
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.outcome import FailureKind
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent
from apikeyrouter.domain.models.routing_decision import CandidateScore, RoutingDecision
from apikeyrouter.domain.models.trusted import trusted
from apikeyrouter.orchestration.context import RouterContext
from apikeyrouter.orchestration.run import PROVIDER_FAILURES, Lease, RequestRun
from apikeyrouter.utils.exceptions import (
    ApiKeyRouterError,
    ModelNotFoundError,
    NoKeyAvailableError,
    ProvidersUnavailableError,
)

_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
# Enum members compared per request, as module constants (cheaper to read on Python 3.11).
_CHAT = Endpoint.CHAT
_HALF_OPEN = CircuitState.HALF_OPEN
#: Exclusion reasons meaning "the provider is down" rather than "the key is busy".
_CIRCUIT_REASONS = frozenset({"circuit_open", "already_tried"})


#: Exclusion reason: the model has no price and the key is under a dollar limit.
UNPRICED_UNDER_SPEND_LIMIT = "unpriced_under_spend_limit"


def _limits_spend(budgets: tuple[Budget, ...], windows: tuple[WindowLimit, ...]) -> bool:
    """Whether a dollar limit is enforced on this key: a hard budget, or its own spend window."""
    return any(b.enforcement == "hard" for b in budgets) or any(
        w.metric == "spend" for w in windows
    )


class ClientRateLimitedError(NoKeyAvailableError):
    """The calling client is over its own per-client limit (from policy)."""

    code = "client_rate_limited"


def needs_tools(intent: RequestIntent) -> bool:
    body = intent.body
    return bool(body.get("tools") or body.get("functions"))


def needs_vision(intent: RequestIntent) -> bool:
    for message in intent.body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") in _IMAGE_PARTS for part in content
        ):
            return True
    return False


#: Routable keys gathered per provider before ranking, by default (see ``KeySelector``).
DEFAULT_SCAN_LIMIT = 64


class KeySelector:
    """``scan_limit``: in a provider with more keys than this, the scan stops once this many
    routable keys are found, and the next request carries on from there, so a pool of ten
    thousand keys costs a request about what a pool of ``scan_limit`` does, and every key is
    still visited in turn. The objective then ranks within what was scanned; when that yields
    no key (every one scanned was full, say), the whole pool is scanned before giving up, so
    the limit never turns away a request that some key could serve. None scans every key."""

    def __init__(self, ctx: RouterContext, scan_limit: int | None = DEFAULT_SCAN_LIMIT) -> None:
        self._ctx = ctx
        self.scan_limit = scan_limit
        self._resume_at: dict[str, int] = {}  # provider id: where its next bounded scan starts

    @property
    def scan_limit(self) -> int | None:
        return self._scan_limit

    @scan_limit.setter
    def scan_limit(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"scan_limit must be a positive integer or None, not {value!r}")
        self._scan_limit = value

    # --- candidates -------------------------------------------------------------------------
    def candidates(self, run: RequestRun, now: float, *, whole: bool = False) -> CandidateSet:
        """``whole``: scan every key whatever the scan limit (the fallback before refusing)."""
        ctx = self._ctx
        limit = None if whole else self._scan_limit
        intent = run.step_intent
        pinned = run.step.provider_id
        allows = None if run.policy.allows_everything else run.policy.allows
        merged = CandidateSet()
        chat = intent.endpoint is _CHAT  # only chat bodies carry tools and images
        tools, vision = chat and needs_tools(intent), chat and needs_vision(intent)
        for provider_id, provider in ctx.providers.items():
            if pinned is not None and provider_id != pinned:
                continue
            if not provider.serves_model(intent.model):
                continue
            adapter = ctx.adapters[provider_id]
            caps = adapter.capabilities
            if (
                not adapter.supports(intent.endpoint, intent.stream)
                or (tools and not caps.tools)
                or (vision and not caps.vision)
            ):
                merged.exclude("provider_lacks_capability")
                continue
            found = collect_candidates(
                ctx.keys.keys_for_provider(provider_id),
                intent.model,
                now,
                ctx.circuits,
                run.tried,
                allows,
                limit=limit,
                start=self._resume_at.get(provider_id, 0),
                pool_id=provider_id,
            )
            if found.resume_at:
                self._resume_at.update(found.resume_at)
            if len(ctx.providers) == 1:
                return found
            merged.merge(found)
        return merged

    # --- reservation ------------------------------------------------------------------------
    def _budgets(self, run: RequestRun, key: APIKey) -> tuple[Budget, ...]:
        cost = self._ctx.cost
        if not cost.has_budgets:
            return ()
        found = cost.budgets_for(
            provider_id=key.provider_id,
            key_id=key.id,
            model=run.step_intent.model,
            client_id=run.intent.client_id,
        )
        for budget_id in run.policy.budgets:  # budgets a policy attaches by reference
            budget = cost.get_budget(budget_id)
            if budget is not None and budget not in found:
                found.append(budget)
        return tuple(found)

    def _client_counters(self, run: RequestRun, tokens: float) -> tuple[SharedCounter, ...]:
        limits = run.policy.client_limits
        client = run.intent.client_id
        if limits is None or client is None:
            return ()
        counter_id = f"client:{client}"
        counters = []
        if limits.requests_per_minute:
            window = WindowLimit("requests", 60.0, limits.requests_per_minute)
            counters.append(SharedCounter(counter_id, window, 1.0))
        if limits.tokens_per_minute:
            window = WindowLimit("tokens", 60.0, limits.tokens_per_minute)
            counters.append(SharedCounter(counter_id, window, tokens))
        return tuple(counters)

    async def acquire(
        self, run: RequestRun, outcome: Lease | ApiKeyRouterError | None = None
    ) -> Lease:
        """Choose and reserve a key, waiting for a reset if configured and worthwhile.

        ``outcome`` is a first :meth:`try_acquire` result the caller already has (the hot path
        calls that directly and comes here only when it did not get a lease)."""
        while True:
            if outcome is None:
                outcome = await self.try_acquire(run)
            if isinstance(outcome, Lease):
                return outcome
            if not isinstance(outcome, NoKeyAvailableError):
                raise outcome
            retry_at = outcome.retry_after
            wait_bound = self._ctx.failures.retry.max_wait_for_reset_seconds
            remaining = run.deadline - time.monotonic()
            if retry_at is None or retry_at > min(wait_bound, remaining):
                raise outcome
            await asyncio.sleep(max(retry_at, 0.001))  # waiting for a reset, by request
            outcome = None

    async def try_acquire(self, run: RequestRun) -> Lease | ApiKeyRouterError:
        outcome, found = await self._try_acquire(run, whole=False)
        if found.truncated and not isinstance(outcome, Lease):
            # Nothing in the part scanned could take it: look at every key before refusing.
            outcome, _ = await self._try_acquire(run, whole=True)
        return outcome

    async def _try_acquire(
        self, run: RequestRun, *, whole: bool
    ) -> tuple[Lease | ApiKeyRouterError, CandidateSet]:
        ctx = self._ctx
        intent = run.step_intent
        now = ctx.clock()
        found = self.candidates(run, now, whole=whole)
        run.last_excluded = found.excluded
        if not found.candidates:
            decision = self._decision(run, found, [], None, now)
            return self.no_key_error(run, decision, found.earliest_ready_at, now), found
        ranking = ctx.engine.rank(found.candidates, ctx.stats, intent.model, run.objective)
        prompt_tokens = estimate_prompt_tokens(intent)
        allowance = completion_allowance(intent)
        tokens = float(prompt_tokens + allowance)
        client_counters = self._client_counters(run, tokens)
        estimates: dict[str, tuple[CostEstimate, dict[str, float]]] = {}
        budgets: dict[str, tuple[Budget, ...]] = {}  # only keys that have some
        any_budgets = ctx.cost.has_budgets
        effective_windows = ctx.quota.effective_windows
        requests: list[ReservationRequest] = []
        half_open: set[str] = set()
        for candidate in ranking.ordered:
            key = candidate.key
            priced = estimates.get(key.provider_id)
            if priced is None:  # one estimate (and amounts) per provider, not per key
                estimate = ctx.cost.estimate(
                    intent.model, prompt_tokens, allowance, key.provider_id
                )
                amounts = {"requests": 1.0, "tokens": tokens}
                if estimate.usd is not None:
                    amounts["spend"] = estimate.usd
                priced = estimates[key.provider_id] = (estimate, amounts)
            estimate, amounts = priced
            shared = client_counters
            key_budgets = self._budgets(run, key) if any_budgets else ()
            windows = effective_windows(key)
            if estimate.usd is None and _limits_spend(key_budgets, windows):
                found.exclude(UNPRICED_UNDER_SPEND_LIMIT)  # it would count as free
                continue
            if key_budgets:
                budgets[key.id] = key_budgets
                shared += ctx.cost.shared_counters(key_budgets, estimate.usd or 0.0, now)
            request = ReservationRequest(key.id, windows, amounts, shared)
            if candidate.circuit is _HALF_OPEN:
                # A half-open key goes first: otherwise a key ranked below healthy ones would
                # never be tested and never recover. Its single probe is claimed below, once
                # the reservation has chosen it, so no probe is ever claimed and left unused.
                requests.insert(len(half_open), request)
                half_open.add(key.id)
                continue
            requests.append(request)
        if not requests and found.excluded.get(UNPRICED_UNDER_SPEND_LIMIT):
            error = UnpricedSpendLimitError(
                f"model {intent.model!r} has no price in the pricing table, so the spending "
                "limits on the keys ranked to serve it (a hard budget or spend_per_month) "
                "cannot be enforced; add the model to the pricing overrides (a price of 0 is "
                "allowed)",
                param="model",
            )
            return error, found
        while True:
            reserved = (
                await ctx.store.reserve(requests, now) if requests else ReservationRefusal(None)
            )
            if isinstance(reserved, ReservationRefusal):
                decision = self._decision(run, found, ranking.scores, None, now)
                refused = await self._refused(
                    run, decision, found, reserved, requests, budgets, now
                )
                return refused, found
            chosen = ctx.keys.find(reserved.key_id)
            if chosen is not None and (
                reserved.key_id not in half_open
                or await ctx.store.try_acquire_probe(reserved.key_id, now)
            ):
                break
            # Revoked while the reservation was on its way (a config reload, say), or another
            # request is probing this key: give the reservation back, try the rest.
            await ctx.store.release(reserved)
            requests = [r for r in requests if r.key_id != reserved.key_id]
        key = chosen
        ctx.quota.charged(key, reserved.amounts, now)
        decision = self._decision(run, found, ranking.scores, key, now)
        stats = ctx.stats.get(key.id)
        if stats is None:
            stats = ctx.stats[key.id] = KeyStats()
        stats.in_flight += 1
        lease = Lease(
            key=key,
            adapter=ctx.adapters[key.provider_id],
            reservation=reserved,
            decision=decision,
            started=time.monotonic(),
            estimated_prompt_tokens=prompt_tokens,
            cost_estimate=estimates[key.provider_id][0],
            budgets=budgets.get(key.id, ()),
            probe=key.id in half_open,
        )
        return lease, found

    def _decision(
        self,
        run: RequestRun,
        found: CandidateSet,
        scores: list[CandidateScore],
        chosen: APIKey | None,
        now: float,
    ) -> RoutingDecision:
        notes: list[str] = []
        if run.attempts:
            tried = ", ".join(f"{a.key_id} ({a.outcome})" for a in run.attempts)
            notes.append(f"failed over from {tried}")
        if run.step.reason != "requested":
            notes.append(f"serving {run.step} as {run.step.reason}")
        if found.truncated:
            notes.append(
                f"looked at {found.considered} of {found.pool} keys: the scan stops at "
                f"{self._scan_limit} routable keys per provider, the next request goes on"
            )
        return trusted(  # hot path: every field given, no validation
            RoutingDecision,
            request_id=run.step_intent.request_id,
            objective=run.objective or self._ctx.engine.default_objective,
            model=run.step_intent.model,
            chosen_key_id=None if chosen is None else chosen.id,
            provider_id=None if chosen is None else chosen.provider_id,
            candidates=scores,
            considered=found.considered,
            excluded=found.excluded,
            attempt=len(run.attempts) + 1,
            notes=notes,
            at=now,
        )

    async def _refused(
        self,
        run: RequestRun,
        decision: RoutingDecision,
        found: CandidateSet,
        refusal: ReservationRefusal,
        requests: list[ReservationRequest],
        budgets: dict[str, tuple[Budget, ...]],
        now: float,
    ) -> ApiKeyRouterError:
        """Say *why* nothing could be reserved: a budget, the client's limit, or the keys."""
        ctx = self._ctx
        shared = {c.counter_id: c for r in requests for c in r.shared}
        if shared:
            spent: dict[str, float] = {}
            for counter in shared.values():
                usage = await ctx.store.window_usage(counter.counter_id, [counter.limit], now)
                spent[counter.counter_id] = usage[0].used if usage else 0.0
            hard = {b.id: b for bs in budgets.values() for b in bs if b.enforcement == "hard"}
            if hard:
                by_budget = {
                    b.id: spent.get(ctx.cost.counter_id(b, now), 0.0) for b in hard.values()
                }
                amount = max((r.amounts.get("spend", 0.0) for r in requests), default=0.0)
                error = ctx.cost.blocking_budget_error(hard.values(), by_budget, amount, now)
                if error is not None:
                    return error
            for counter in shared.values():
                if counter.counter_id.startswith("client:") and (
                    spent[counter.counter_id] + counter.amount > counter.limit.limit
                ):
                    return ClientRateLimitedError(
                        f"client {run.intent.client_id!r} is over its limit of "
                        f"{counter.limit.limit:g} {counter.limit.metric} per minute",
                        retry_after=refusal.retry_at - now if refusal.retry_at else None,
                    )
        decision.excluded = {**found.excluded, "no_quota_room": len(requests)}
        ready = found.earliest_ready_at
        if refusal.retry_at is not None:
            ready = refusal.retry_at if ready is None else min(ready, refusal.retry_at)
        return self.no_key_error(run, decision, ready, now)

    # --- errors -----------------------------------------------------------------------------
    def no_key_error(
        self, run: RequestRun, decision: RoutingDecision, ready_at: float | None, now: float
    ) -> ApiKeyRouterError:
        retry_after = max(0.0, ready_at - now) if ready_at is not None else None
        failures = run.step_failures
        kinds = {f.kind for f in failures}
        model = run.step_intent.model
        if decision.considered == 0 and not failures:
            return ModelNotFoundError(
                f"no registered provider serves model {model!r} "
                f"for {run.step_intent.endpoint.value}"
                + (" with the required capabilities" if decision.excluded else ""),
                param="model",
            )
        if failures and kinds <= {FailureKind.MODEL_NOT_ALLOWED}:
            return ModelNotFoundError(
                f"model {model!r} is not available to any key: {failures[-1].message}",
                param="model",
            )
        excluded = {reason for reason, count in decision.excluded.items() if count}
        circuits_only = "circuit_open" in excluded and excluded <= _CIRCUIT_REASONS
        error_cls = (
            ProvidersUnavailableError
            if (failures and kinds <= PROVIDER_FAILURES) or (not failures and circuits_only)
            else NoKeyAvailableError
        )
        detail = f"; retry after {retry_after:.3g}s" if retry_after is not None else ""
        return error_cls(
            f"{decision.explanation}{detail}",
            retry_after=retry_after,
            reasons=decision.excluded,
            attempts=len(run.attempts),
            attempt_records=list(run.attempts),
        )

    def exhausted_error(self, run: RequestRun) -> ApiKeyRouterError:
        ctx = self._ctx
        decision = RoutingDecision(
            request_id=run.intent.request_id,
            objective=run.objective or ctx.engine.default_objective,
            model=run.step_intent.model,
            considered=len(run.tried),
            excluded=run.last_excluded,
            attempt=len(run.attempts),
        )
        now = ctx.clock()
        ready = [
            key.cooldown_until
            for key in (ctx.keys.find(key_id) for key_id in run.tried)
            if key is not None and key.cooldown_until is not None and key.cooldown_until > now
        ]
        error = self.no_key_error(run, decision, min(ready) if ready else None, now)
        error.message = f"retry budget of {run.max_attempts} attempt(s) used up; " + error.message
        error.args = (error.message,)
        return error
