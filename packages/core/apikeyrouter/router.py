"""ApiKeyRouter: the public entry point that turns many keys into one reliable endpoint.

Per request: pick candidates (local memory, no I/O), rank them for the objective, reserve the
estimated usage on the best one with room (one store call), call the provider, interpret the
outcome, and fail over within the retry budget and the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from apikeyrouter.domain.components.candidate_filter import CandidateSet, collect_candidates
from apikeyrouter.domain.components.failure_handler import FailureHandler, RetryPolicy
from apikeyrouter.domain.components.key_manager import KeyManager
from apikeyrouter.domain.components.quota_awareness_engine import QuotaAwarenessEngine
from apikeyrouter.domain.components.routing_engine import RoutingEngine, explain
from apikeyrouter.domain.components.token_estimator import (
    completion_allowance,
    estimate_prompt_tokens,
)
from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter, UpstreamSuccess
from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitSnapshot,
    CircuitState,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    StateStore,
)
from apikeyrouter.domain.models.api_key import APIKey, KeyLimits, KeyState
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure, RateLimitInfo
from apikeyrouter.domain.models.provider import Provider
from apikeyrouter.domain.models.quota_state import ExhaustionPrediction, QuotaState
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent, RoutingObjective
from apikeyrouter.domain.models.response import AttemptRecord, RouterResponse, Usage
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.router_stream import RoutedStream
from apikeyrouter.utils.encryption import KeyEncryptor
from apikeyrouter.utils.exceptions import (
    ApiKeyRouterError,
    InvalidRequestError,
    ModelNotFoundError,
    NoKeyAvailableError,
    ProviderNotFoundError,
    ProvidersUnavailableError,
    RequestDeadlineExceededError,
    UpstreamError,
)
from apikeyrouter.utils.validation import intent_from_openai

_LIMIT_FIELDS = frozenset(KeyLimits.model_fields)
_KEY_FIELDS = frozenset({"weight", "tags", "models", "key_id", "limits"})
_PROVIDER_FAILURES = frozenset(
    {FailureKind.PROVIDER_ERROR, FailureKind.TIMEOUT, FailureKind.CONNECTION}
)


@dataclass(slots=True)
class Lease:
    """One attempt's hold on a key: what was chosen, and the quota reserved for it."""

    key: APIKey
    adapter: ProviderAdapter
    reservation: Reservation
    decision: RoutingDecision
    started: float
    estimated_prompt_tokens: int
    probe: bool = False


@dataclass(slots=True)
class RequestRun:
    """The bookkeeping of one request across its attempts."""

    intent: RequestIntent
    objective: RoutingObjective | None
    deadline: float
    started: float
    tried: set[str] = field(default_factory=set)
    attempts: list[AttemptRecord] = field(default_factory=list)
    failures: list[ProviderFailure] = field(default_factory=list)
    last_excluded: dict[str, int] = field(default_factory=dict)


class ApiKeyRouter:
    """Route OpenAI-format requests across registered keys and providers.

    >>> router = ApiKeyRouter()
    >>> await router.register_provider("openai", OpenAIAdapter())
    >>> await router.register_key("sk-...", "openai", requests_per_minute=500)
    >>> response = await router.route({"model": "gpt-4o-mini", "messages": [...]})
    """

    def __init__(
        self,
        store: StateStore | None = None,
        *,
        master_key: str | None = None,
        objective: RoutingObjective | str = RoutingObjective.QUOTA,
        retry_policy: RetryPolicy | None = None,
        circuit_policy: CircuitPolicy | None = None,
        clock: Callable[[], float] = time.time,
        record_decisions: bool = True,
    ) -> None:
        self.store: StateStore = store if store is not None else InMemoryStateStore()
        self._clock = clock
        self.keys = KeyManager(self.store, KeyEncryptor(master_key), clock)
        self.quota = QuotaAwarenessEngine(self.store, clock)
        self.engine = RoutingEngine(
            RoutingObjective(objective), headroom_lookup=self.quota.headroom
        )
        self.failures = FailureHandler(
            retry=retry_policy or RetryPolicy(), circuit=circuit_policy or CircuitPolicy()
        )
        self._providers: dict[str, Provider] = {}
        self._adapters: dict[str, ProviderAdapter] = {}
        self._stats: dict[str, KeyStats] = {}
        self._circuits: dict[str, CircuitSnapshot] = {}
        self._record_decisions = record_decisions
        self._log = get_logger("apikeyrouter.router")

    def __repr__(self) -> str:
        return (
            f"ApiKeyRouter(providers={sorted(self._providers)}, keys={len(self.keys.list_keys())}, "
            f"store={type(self.store).__name__})"
        )

    # --- registration -----------------------------------------------------------------------
    async def register_provider(
        self,
        provider_id: str,
        adapter: ProviderAdapter,
        *,
        models: Iterable[str] | None = None,
    ) -> Provider:
        provider = Provider(
            id=provider_id,
            kind=adapter.kind,
            base_url=adapter.base_url,
            capabilities=adapter.capabilities,
            models=frozenset(models) if models is not None else None,
        )
        self._providers[provider_id] = provider
        self._adapters[provider_id] = adapter
        return provider

    def providers(self) -> list[Provider]:
        return list(self._providers.values())

    async def register_key(
        self,
        key_material: str,
        provider_id: str,
        metadata: dict[str, Any] | None = None,
        **options: Any,
    ) -> APIKey:
        """Register a key. Options: ``weight``, ``tags``, ``models``, ``key_id``, and limits
        (``requests_per_minute``, ``tokens_per_minute``, ``requests_per_day``,
        ``tokens_per_day``, ``spend_per_month``) or a ``limits`` object."""
        if provider_id not in self._providers:
            raise ProviderNotFoundError(
                f"provider {provider_id!r} is not registered", param="provider_id"
            )
        unknown = set(options) - _LIMIT_FIELDS - _KEY_FIELDS
        if unknown:
            raise InvalidRequestError(
                f"unknown key option(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0]
            )
        limits = options.pop("limits", None)
        limit_values = {name: options.pop(name) for name in _LIMIT_FIELDS & set(options)}
        if limits is None:
            try:
                limits = KeyLimits(**limit_values)
            except ValueError as exc:
                raise InvalidRequestError(f"invalid key limits: {exc}", param="limits") from exc
        return await self.keys.register_key(
            key_material,
            provider_id,
            limits=limits,
            weight=options.get("weight", 1.0),
            tags=options.get("tags", ()),
            metadata=metadata,
            models=options.get("models"),
            key_id=options.get("key_id"),
        )

    # --- routing ----------------------------------------------------------------------------
    def _coerce(self, intent: RequestIntent | dict[str, Any], endpoint: Endpoint) -> RequestIntent:
        if isinstance(intent, RequestIntent):
            return intent
        return intent_from_openai(intent, endpoint)

    def _start_run(
        self, intent: RequestIntent, objective: RoutingObjective | str | None
    ) -> RequestRun:
        now = time.monotonic()
        budget = intent.timeout_seconds or self.failures.retry.deadline_seconds
        chosen = RoutingObjective(objective) if objective is not None else intent.objective
        return RequestRun(intent, chosen, now + budget, now)

    def _candidates(self, intent: RequestIntent, run: RequestRun, now: float) -> CandidateSet:
        merged = CandidateSet()
        for provider_id, provider in self._providers.items():
            if not provider.serves_model(intent.model):
                continue
            if not self._adapters[provider_id].supports(intent.endpoint, intent.stream):
                continue
            found = collect_candidates(
                self.keys.keys_for_provider(provider_id),
                intent.model,
                now,
                self._circuits,
                run.tried,
            )
            if len(self._providers) == 1:
                return found
            merged.merge(found)
        return merged

    async def _acquire(self, run: RequestRun) -> Lease:
        """Choose and reserve a key, waiting for a reset if configured and worthwhile."""
        while True:
            outcome = await self._try_acquire(run)
            if isinstance(outcome, Lease):
                return outcome
            if not isinstance(outcome, NoKeyAvailableError):
                raise outcome
            retry_at = outcome.retry_after
            wait_bound = self.failures.retry.max_wait_for_reset_seconds
            remaining = run.deadline - time.monotonic()
            if retry_at is None or retry_at > min(wait_bound, remaining):
                raise outcome
            await asyncio.sleep(max(retry_at, 0.001))

    async def _try_acquire(self, run: RequestRun) -> Lease | ApiKeyRouterError:
        intent = run.intent
        now = self._clock()
        found = self._candidates(intent, run, now)
        run.last_excluded = found.excluded
        attempt = len(run.attempts) + 1
        decision = RoutingDecision.model_construct(  # hot path: all fields given, no validation
            request_id=intent.request_id,
            objective=run.objective or self.engine.default_objective,
            model=intent.model,
            chosen_key_id=None,
            provider_id=None,
            candidates=[],
            considered=found.considered,
            excluded=found.excluded,
            attempt=attempt,
            explanation="",
            at=now,
        )
        if not found.candidates:
            return self._no_key_error(run, decision, found.earliest_ready_at, now)
        ranking = self.engine.rank(found.candidates, self._stats, intent.model, run.objective)
        decision.candidates = ranking.scores
        prompt_tokens = estimate_prompt_tokens(intent)
        tokens = float(prompt_tokens + completion_allowance(intent))
        amounts = {"requests": 1.0, "tokens": tokens}
        requests: list[ReservationRequest] = []
        probes: set[str] = set()
        for candidate in ranking.ordered:
            request = ReservationRequest(
                candidate.key.id, self.quota.effective_windows(candidate.key), amounts
            )
            if candidate.circuit is CircuitState.HALF_OPEN:
                # A half-open key gets exactly one probe, and it goes first: otherwise a key
                # ranked below healthy ones would never be tested and never recover.
                if await self.store.try_acquire_probe(candidate.key.id, now):
                    probes.add(candidate.key.id)
                    requests.insert(len(probes) - 1, request)
                continue
            requests.append(request)
        reserved = await self.store.reserve(requests, now) if requests else ReservationRefusal(None)
        if isinstance(reserved, ReservationRefusal):
            decision.excluded = {**found.excluded, "no_quota_room": len(requests)}
            ready = found.earliest_ready_at
            if reserved.retry_at is not None:
                ready = reserved.retry_at if ready is None else min(ready, reserved.retry_at)
            return self._no_key_error(run, decision, ready, now)
        key = self.keys.get(reserved.key_id)
        self.quota.charged(key, amounts, now)
        decision.chosen_key_id = key.id
        decision.provider_id = key.provider_id
        decision.explanation = explain(decision)
        if run.attempts:
            decision.explanation += "; failed over from " + ", ".join(
                f"{a.key_id} ({a.outcome})" for a in run.attempts
            )
        stats = self._stats.setdefault(key.id, KeyStats())
        stats.in_flight += 1
        return Lease(
            key=key,
            adapter=self._adapters[key.provider_id],
            reservation=reserved,
            decision=decision,
            started=time.monotonic(),
            estimated_prompt_tokens=prompt_tokens,
            probe=key.id in probes,
        )

    def _no_key_error(
        self, run: RequestRun, decision: RoutingDecision, ready_at: float | None, now: float
    ) -> ApiKeyRouterError:
        decision.explanation = explain(decision)
        retry_after = max(0.0, ready_at - now) if ready_at is not None else None
        kinds = {f.kind for f in run.failures}
        if decision.considered == 0 and not run.attempts:
            return ModelNotFoundError(
                f"no registered provider serves model {run.intent.model!r} "
                f"for {run.intent.endpoint.value}",
                param="model",
            )
        if run.failures and kinds <= {FailureKind.MODEL_NOT_ALLOWED}:
            return ModelNotFoundError(
                f"model {run.intent.model!r} is not available to any key: "
                f"{run.failures[-1].message}",
                param="model",
            )
        error_cls = (
            ProvidersUnavailableError
            if run.failures and kinds <= _PROVIDER_FAILURES
            else NoKeyAvailableError
        )
        detail = f"; retry after {retry_after:.3g}s" if retry_after is not None else ""
        return error_cls(
            f"{decision.explanation}{detail}",
            retry_after=retry_after,
            reasons=decision.excluded,
            attempts=len(run.attempts),
        )

    def _attempt_timeout(self, run: RequestRun) -> float:
        remaining = run.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestDeadlineExceededError(
                f"request deadline passed after {len(run.attempts)} attempt(s)"
            )
        return min(self.failures.retry.attempt_timeout_seconds, remaining)

    async def _succeeded(
        self, run: RequestRun, lease: Lease, usage: Usage | None, rate_limit: RateLimitInfo
    ) -> AttemptRecord:
        key = lease.key
        latency_ms = (time.monotonic() - lease.started) * 1000.0
        now = self._clock()
        stats = self._stats[key.id]
        stats.in_flight -= 1
        stats.served += 1
        stats.last_used_at = now
        stats.record_latency(latency_ms)
        stats.record_result(True)
        reserved_tokens = lease.reservation.amounts.get("tokens", 0.0)
        charged_tokens = reserved_tokens
        if usage is not None and usage.total_tokens:
            # Providers charge the rate limit for the completion they were allowed up front
            # (max_tokens), not only for what was generated: count what they count.
            allowance = run.intent.max_tokens or 0
            charged_tokens = float(
                usage.prompt_tokens + max(usage.completion_tokens, allowance)
                if usage.prompt_tokens
                else usage.total_tokens
            )
            if charged_tokens != reserved_tokens:
                await self.store.commit(
                    lease.reservation, {"requests": 1.0, "tokens": charged_tokens}
                )
                self.quota.charged(
                    key, {"tokens": charged_tokens - reserved_tokens}, lease.reservation.at
                )
            if usage.prompt_tokens:
                self.quota.record_token_estimate(lease.estimated_prompt_tokens, usage.prompt_tokens)
        self.quota.consumed(key, 1.0, charged_tokens, now)
        await self.quota.observe(key, rate_limit, now)
        circuit = self._circuits.get(key.id)
        if circuit is not None:  # only keys that have failed have an entry
            await self.store.record_success(key.id, now)
            self._circuits.pop(key.id, None)
        if key.state is not KeyState.AVAILABLE:
            await self.keys.set_state(
                key.id,
                KeyState.AVAILABLE,
                "served a request after cooldown",
                request_id=run.intent.request_id,
                expected=key.state,
            )
        await self._apply_rate_limit(key, rate_limit, now, run.intent.request_id)
        usage_counters = key.usage
        usage_counters.requests += 1
        usage_counters.successes += 1
        if usage is not None:
            usage_counters.prompt_tokens += usage.prompt_tokens
            usage_counters.completion_tokens += usage.completion_tokens
        usage_counters.last_used_at = now
        record = AttemptRecord(
            key_id=key.id,
            provider_id=key.provider_id,
            outcome="success",
            status=200,
            latency_ms=round(latency_ms, 3),
        )
        run.attempts.append(record)
        return record

    async def _apply_rate_limit(
        self, key: APIKey, rate_limit: RateLimitInfo, now: float, request_id: str
    ) -> None:
        """A response saying "0 remaining" means the next call would 429: cool down now."""
        exhausted_until: float | None = None
        if rate_limit.requests_remaining == 0 and rate_limit.requests_reset_at is not None:
            exhausted_until = rate_limit.requests_reset_at
        if rate_limit.tokens_remaining == 0 and rate_limit.tokens_reset_at is not None:
            exhausted_until = max(exhausted_until or 0.0, rate_limit.tokens_reset_at)
        if exhausted_until is not None and exhausted_until > now:
            await self.keys.set_state(
                key.id,
                KeyState.THROTTLED,
                "provider reports no remaining quota",
                cooldown_until=exhausted_until,
                request_id=request_id,
                expected=key.state,
            )

    async def _failed(self, run: RequestRun, lease: Lease, failure: ProviderFailure) -> bool:
        """Record a failed attempt; return True when another key should be tried."""
        key = lease.key
        now = self._clock()
        latency_ms = (time.monotonic() - lease.started) * 1000.0
        stats = self._stats[key.id]
        stats.in_flight -= 1
        stats.last_used_at = now
        key.usage.requests += 1
        key.usage.failures += 1
        action = self.failures.decide(failure, now)
        run.failures.append(failure)
        run.attempts.append(
            AttemptRecord(
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
            await self._release(lease)
        await self.quota.observe(key, failure.rate_limit, now)
        if not action.retry_elsewhere:
            return False
        stats.record_result(False)
        run.tried.add(key.id)
        if action.new_state is not None and key.state is not action.new_state:
            await self.keys.set_state(
                key.id,
                action.new_state,
                action.reason,
                cooldown_until=action.cooldown_until,
                request_id=run.intent.request_id,
                expected=key.state,
            )
        elif action.new_state is not None and action.cooldown_until is not None:
            key.cooldown_until = max(key.cooldown_until or 0.0, action.cooldown_until)
            await self.store.set_cooldown(key.id, key.cooldown_until)
        if action.exclude_model:
            await self.keys.exclude_model(key.id, run.intent.model)
        if action.count_for_circuit:
            snapshot = await self.store.record_failure(key.id, now, self.failures.circuit)
            self._circuits[key.id] = snapshot
        self._log.info(
            "attempt_failed",
            request_id=run.intent.request_id,
            key_id=key.id,
            provider=key.provider_id,
            failure=failure.kind.value,
            status=failure.status,
            detail=failure.message,
        )
        return True

    def _upstream_error(self, lease: Lease, failure: ProviderFailure) -> UpstreamError:
        return UpstreamError(
            failure.message,
            status=failure.status or 400,
            error_type=failure.error_type or "invalid_request_error",
            code=failure.code or failure.kind.value,
            param=failure.param,
            key_id=lease.key.id,
            provider_id=lease.key.provider_id,
        )

    async def _pause_before_retry(self, run: RequestRun, failure: ProviderFailure) -> None:
        if failure.kind in _PROVIDER_FAILURES:
            delay = self.failures.backoff_delay(len(run.attempts))
            remaining = run.deadline - time.monotonic()
            if delay > 0 and remaining > delay:
                await asyncio.sleep(delay)

    async def route(
        self,
        intent: RequestIntent | dict[str, Any],
        objective: RoutingObjective | str | None = None,
        *,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> RouterResponse:
        """Serve a non-streaming request, failing over across keys until one succeeds.

        Raises :class:`NoKeyAvailableError` (with ``retry_after``) when no key can serve,
        :class:`UpstreamError` when the upstream rejected the request itself.
        """
        request = self._coerce(intent, endpoint)
        if request.stream:
            raise InvalidRequestError("use stream() for streaming requests", param="stream")
        run = self._start_run(request, objective)
        for _ in range(self.failures.retry.max_attempts):
            lease = await self._acquire(run)
            try:
                result = await lease.adapter.send(
                    request, self.keys.secret(lease.key), self._attempt_timeout(run)
                )
            except BaseException:
                await self._abandon(lease)
                raise
            if isinstance(result, UpstreamSuccess):
                await self._succeeded(run, lease, result.usage, result.rate_limit)
                await self._finish(run, lease)
                return RouterResponse(
                    body=result.body,
                    key_used=lease.key.id,
                    provider_id=lease.key.provider_id,
                    model=request.model,
                    usage=result.usage,
                    decision=lease.decision,
                    attempts=run.attempts,
                    latency_ms=round((time.monotonic() - run.started) * 1000.0, 3),
                )
            if not await self._failed(run, lease, result):
                await self._finish(run, lease)
                raise self._upstream_error(lease, result)
            await self._pause_before_retry(run, result)
        raise self._exhausted_error(run)

    def _exhausted_error(self, run: RequestRun) -> ApiKeyRouterError:
        decision = RoutingDecision(
            request_id=run.intent.request_id,
            objective=run.objective or self.engine.default_objective,
            model=run.intent.model,
            considered=len(run.tried),
            excluded=run.last_excluded,
            attempt=len(run.attempts),
        )
        now = self._clock()
        ready = [
            k.cooldown_until
            for k in (self.keys.get(i) for i in run.tried if i in self._stats)
            if k.cooldown_until is not None and k.cooldown_until > now
        ]
        error = self._no_key_error(run, decision, min(ready) if ready else None, now)
        error.message = (
            f"retry budget of {self.failures.retry.max_attempts} attempt(s) used up; "
            + error.message
        )
        error.args = (error.message,)
        return error

    async def _release(self, lease: Lease) -> None:
        reservation = lease.reservation
        await self.store.release(reservation)
        self.quota.charged(
            lease.key, {m: -a for m, a in reservation.amounts.items()}, reservation.at
        )

    async def _abandon(self, lease: Lease) -> None:
        """The caller went away mid-call (cancellation): free what the attempt held."""
        self._stats[lease.key.id].in_flight -= 1
        await asyncio.shield(self._release(lease))

    async def _finish(self, run: RequestRun, lease: Lease) -> None:
        decision = lease.decision
        if self._record_decisions:
            await self.store.record_decision(decision)
        self._log.info(
            "routed",
            request_id=run.intent.request_id,
            key_id=lease.key.id,
            provider=lease.key.provider_id,
            model=run.intent.model,
            attempts=len(run.attempts),
            outcome=run.attempts[-1].outcome if run.attempts else None,
            latency_ms=round((time.monotonic() - run.started) * 1000.0, 3),
            explanation=decision.explanation,
        )

    async def open_stream(
        self,
        intent: RequestIntent | dict[str, Any],
        objective: RoutingObjective | str | None = None,
        *,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> RoutedStream:
        """Start a streaming request. Failover happens until the first chunk is in hand;
        after that a broken stream ends with :class:`StreamInterruptedError`."""
        request = self._coerce(intent, endpoint)
        if not request.stream:
            request = request.model_copy(update={"stream": True})
        run = self._start_run(request, objective)
        for _ in range(self.failures.retry.max_attempts):
            lease = await self._acquire(run)
            try:
                opened = await lease.adapter.open_stream(
                    request, self.keys.secret(lease.key), self._attempt_timeout(run)
                )
                if isinstance(opened, ProviderFailure):
                    failure = opened
                else:
                    stream = RoutedStream(self, run, lease, opened)
                    failure_or_none = await stream.prefetch()
                    if failure_or_none is None:
                        return stream
                    failure = failure_or_none
            except BaseException:
                await self._abandon(lease)
                raise
            if not await self._failed(run, lease, failure):
                await self._finish(run, lease)
                raise self._upstream_error(lease, failure)
            await self._pause_before_retry(run, failure)
        raise self._exhausted_error(run)

    async def stream(
        self,
        intent: RequestIntent | dict[str, Any],
        objective: RoutingObjective | str | None = None,
        *,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> AsyncIterator[dict[str, Any]]:
        """Async iterator of OpenAI-format chunks (dicts), the last one carrying usage."""
        routed = await self.open_stream(intent, objective, endpoint=endpoint)
        async for chunk in routed.chunks():
            yield chunk

    # --- introspection ----------------------------------------------------------------------
    async def quota_state(self, key_id: str) -> QuotaState:
        """Windows, capacity state and confidence for one key."""
        return await self.quota.quota_state(self.keys.get(key_id))

    def predict_exhaustion(self, key_id: str) -> ExhaustionPrediction:
        """When the key runs out of its tightest window at the current pace."""
        return self.quota.predict_exhaustion(self.keys.get(key_id))

    def stats(self, key_id: str) -> KeyStats:
        return self._stats.get(key_id, KeyStats())

    async def circuit(self, key_id: str) -> CircuitSnapshot:
        return await self.store.circuit(key_id, self._clock())

    async def close(self) -> None:
        for adapter in self._adapters.values():
            await adapter.close()
        await self.store.close()

    async def __aenter__(self) -> ApiKeyRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
