"""What an attempt's outcome changes: usage, spend, quota knowledge, key state, circuits."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from apikeyrouter.domain.models.api_key import APIKey, KeyState
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure, RateLimitInfo
from apikeyrouter.domain.models.response import AttemptRecord, Usage
from apikeyrouter.domain.models.trusted import trusted
from apikeyrouter.orchestration.context import RouterContext
from apikeyrouter.orchestration.run import PROVIDER_FAILURES, Lease, RequestRun
from apikeyrouter.utils.exceptions import UpstreamError

_AVAILABLE = KeyState.AVAILABLE  # compared on every success (a module constant reads faster)


class OutcomeRecorder:
    def __init__(self, ctx: RouterContext) -> None:
        self._ctx = ctx

    def _stats(self, key_id: str) -> KeyStats:
        """The key's runtime stats; a throwaway record when the key was revoked (and its stats
        dropped) while this attempt was in flight."""
        stats = self._ctx.stats.get(key_id)
        return stats if stats is not None else KeyStats()

    # --- success ----------------------------------------------------------------------------
    async def succeeded(
        self, run: RequestRun, lease: Lease, usage: Usage | None, rate_limit: RateLimitInfo
    ) -> AttemptRecord:
        ctx = self._ctx
        key = lease.key
        latency_ms = (time.monotonic() - lease.started) * 1000.0
        now = ctx.clock()
        self._stats(key.id).record_success(latency_ms, now)
        charged_tokens, cost_usd = await self._commit(run, lease, usage, now)
        ctx.quota.consumed(key, 1.0, charged_tokens, now)
        reported = not rate_limit.is_empty()  # did the response carry quota headers at all
        if reported:
            await ctx.quota.observe(key, rate_limit, now)
        if key.id in ctx.circuits:  # only keys that have failed have an entry
            await ctx.store.record_success(key.id, now)
            ctx.circuits.pop(key.id, None)
        if key.state is not _AVAILABLE:
            await ctx.keys.set_state(
                key.id,
                KeyState.AVAILABLE,
                "served a request after cooldown",
                request_id=run.intent.request_id,
                expected=key.state,
            )
        if reported:  # after the line above: "0 remaining" wins over it
            await self._throttle_if_drained(key, rate_limit, now, run.intent.request_id)
        if usage is None:
            key.usage.record_success(0, 0, cost_usd, now)
        else:
            key.usage.record_success(usage.prompt_tokens, usage.completion_tokens, cost_usd, now)
        record = trusted(  # hot path: fields known, skip validation
            AttemptRecord,
            key_id=key.id,
            provider_id=key.provider_id,
            outcome="success",
            status=200,
            latency_ms=round(latency_ms, 3),
        )
        run.attempts.append(record)
        return record

    async def _commit(
        self, run: RequestRun, lease: Lease, usage: Usage | None, now: float
    ) -> tuple[float, float | None]:
        """Replace the reservation's estimates with what the provider counted and charged.

        Returns the tokens charged and the actual cost (None when unknown)."""
        ctx = self._ctx
        key = lease.key
        reserved = lease.reservation.amounts
        reserved_tokens = reserved.get("tokens", 0.0)
        if usage is None or not usage.total_tokens:
            return reserved_tokens, None  # nothing reported: the estimate stands
        # Providers charge the rate limit for the completion they allowed up front
        # (max_tokens), not only for what was generated: count what they count.
        allowance = run.step_intent.max_tokens or 0
        charged_tokens = float(
            usage.prompt_tokens + max(usage.completion_tokens, allowance)
            if usage.prompt_tokens
            else usage.total_tokens
        )
        actual = {"requests": 1.0, "tokens": charged_tokens}
        cost = ctx.cost.actual(run.step_intent.model, usage, key.provider_id)
        if cost.usd is not None:
            actual["spend"] = cost.usd
            ctx.cost.reconcile(lease.cost_estimate, cost)
        if any(actual.get(m, a) != a for m, a in reserved.items()) or lease.budgets:
            # Soft budgets are checked against the window once the commit is in it.
            after = (
                functools.partial(self._check_soft_budgets, lease, now) if lease.budgets else None
            )
            writer = ctx.write_behind
            if writer is None or not writer.commit(lease.reservation, actual, after):
                await ctx.store.commit(lease.reservation, actual)
                if after is not None:
                    await after()
            delta = {m: actual[m] - reserved.get(m, 0.0) for m in actual if m in reserved}
            ctx.quota.charged(key, delta, lease.reservation.at)
        if usage.prompt_tokens:
            ctx.quota.record_token_estimate(lease.estimated_prompt_tokens, usage.prompt_tokens)
        return charged_tokens, cost.usd

    async def _check_soft_budgets(self, lease: Lease, now: float) -> None:
        ctx = self._ctx
        for budget in lease.budgets:
            if budget.enforcement == "hard":
                continue
            counter = ctx.cost.budget_counter(budget, now)
            usage = await ctx.store.window_usage(counter.counter_id, [counter.limit], now)
            event = ctx.cost.check_soft(budget, usage[0].used if usage else 0.0, now)
            if event is not None:
                ctx.log.warning("budget_exceeded", **event.model_dump(mode="json"))
                for listener in ctx.budget_listeners:
                    listener(event)

    async def _throttle_if_drained(
        self, key: APIKey, rate_limit: RateLimitInfo, now: float, request_id: str
    ) -> None:
        """A response saying "0 remaining" means the next call would 429: cool down now."""
        until: float | None = None
        if rate_limit.requests_remaining == 0 and rate_limit.requests_reset_at is not None:
            until = rate_limit.requests_reset_at
        if rate_limit.tokens_remaining == 0 and rate_limit.tokens_reset_at is not None:
            until = max(until or 0.0, rate_limit.tokens_reset_at)
        if until is not None and until > now:
            await self._ctx.keys.set_state(
                key.id,
                KeyState.THROTTLED,
                "provider reports no remaining quota",
                cooldown_until=until,
                request_id=request_id,
                expected=key.state,
            )

    # --- failure ----------------------------------------------------------------------------
    async def failed(self, run: RequestRun, lease: Lease, failure: ProviderFailure) -> bool:
        """Record a failed attempt; return True when another key should be tried."""
        ctx = self._ctx
        key = lease.key
        now = ctx.clock()
        latency_ms = (time.monotonic() - lease.started) * 1000.0
        stats = self._stats(key.id)
        stats.in_flight -= 1
        stats.last_used_at = now
        key.usage.requests += 1
        key.usage.failures += 1
        action = ctx.failures.decide(failure, now)
        run.failures.append(failure)
        run.step_failures.append(failure)
        run.attempts.append(
            trusted(
                AttemptRecord,
                key_id=key.id,
                provider_id=key.provider_id,
                outcome=failure.kind.value,
                status=failure.status,
                latency_ms=round(latency_ms, 3),
            )
        )
        if failure.kind not in (FailureKind.TIMEOUT, FailureKind.CONNECTION):
            # Refused outright: give the reservation back. (A timeout or a broken connection
            # may have been charged upstream, so those keep theirs.)
            await self.release(lease)
        await ctx.quota.observe(key, failure.rate_limit, now)
        if not action.count_for_circuit and key.id in ctx.circuits:
            # Any 4xx answer shows the provider is reachable: that is all the circuit tracks
            # (a half-open probe gets its verdict here too). The key's own state handles the
            # 429 or the bad key.
            await ctx.store.record_success(key.id, now)
            ctx.circuits.pop(key.id, None)
        if not action.retry_elsewhere:
            return False
        stats.record_result(False)
        run.tried.add(key.id)
        if action.new_state is not None and key.state is not action.new_state:
            await ctx.keys.set_state(
                key.id,
                action.new_state,
                action.reason,
                cooldown_until=action.cooldown_until,
                request_id=run.intent.request_id,
                expected=key.state,
            )
        elif action.new_state is not None and action.cooldown_until is not None:
            key.cooldown_until = max(key.cooldown_until or 0.0, action.cooldown_until)
            await ctx.store.set_cooldown(key.id, key.cooldown_until)
        if action.exclude_model and ctx.keys.find(key.id) is not None:  # not revoked since
            await ctx.keys.exclude_model(key.id, run.step_intent.model)
        if action.count_for_circuit:
            ctx.circuits[key.id] = await ctx.store.record_failure(key.id, now, ctx.failures.circuit)
        ctx.log.info(
            "attempt_failed",
            request_id=run.intent.request_id,
            key_id=key.id,
            provider=key.provider_id,
            failure=failure.kind.value,
            status=failure.status,
            detail=failure.message,
        )
        return True

    @staticmethod
    def upstream_error(lease: Lease, failure: ProviderFailure) -> UpstreamError:
        return UpstreamError(
            failure.message,
            status=failure.status or 400,
            error_type=failure.error_type or "invalid_request_error",
            code=failure.code or failure.kind.value,
            param=failure.param,
            key_id=lease.key.id,
            provider_id=lease.key.provider_id,
        )

    async def pause_before_retry(self, run: RequestRun, failure: ProviderFailure) -> None:
        if failure.kind in PROVIDER_FAILURES:
            delay = self._ctx.failures.backoff_delay(len(run.attempts))
            remaining = run.deadline - time.monotonic()
            if delay > 0 and remaining > delay:
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation

    # --- bookkeeping ------------------------------------------------------------------------
    async def release(self, lease: Lease) -> None:
        reservation = lease.reservation
        await self._ctx.store.release(reservation)
        given_back = {metric: -amount for metric, amount in reservation.amounts.items()}
        self._ctx.quota.charged(lease.key, given_back, reservation.at)

    async def abandon(self, lease: Lease) -> None:
        """The caller went away mid-call (cancellation): free what the attempt held. An
        abandoned probe counts as failed, so the circuit reopens instead of staying claimed."""
        ctx = self._ctx
        self._stats(lease.key.id).in_flight -= 1
        await asyncio.shield(self.release(lease))
        if lease.probe:
            ctx.circuits[lease.key.id] = await asyncio.shield(
                ctx.store.record_failure(lease.key.id, ctx.clock(), ctx.failures.circuit)
            )

    async def finish(self, run: RequestRun, lease: Lease) -> None:
        ctx = self._ctx
        decision = lease.decision
        if ctx.record_decisions:
            if ctx.write_behind is not None:
                ctx.write_behind.decision(decision)
            else:
                await ctx.store.record_decision(decision)
        log = ctx.log
        if not log.isEnabledFor(logging.INFO):  # skip building the event when it is dropped
            return
        log.info(
            "routed",
            request_id=run.intent.request_id,
            key_id=lease.key.id,
            provider=lease.key.provider_id,
            model=run.step_intent.model,
            attempts=len(run.attempts),
            outcome=run.attempts[-1].outcome if run.attempts else None,
            latency_ms=round((time.monotonic() - run.started) * 1000.0, 3),
            explanation=decision.explanation,
        )
