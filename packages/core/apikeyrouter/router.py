"""ApiKeyRouter: the public entry point that turns many keys into one reliable endpoint.

Per request: resolve the policy, plan the targets (the model, its group members, fallbacks),
and for each target pick candidates (memory only), rank them for the objective, reserve the
estimated usage and spend on the best one with room (one store call), call the provider,
record the outcome, and fail over within the retry budget and the deadline.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from apikeyrouter.domain.components.cost_controller import CostController
from apikeyrouter.domain.components.failure_handler import FailureHandler, RetryPolicy
from apikeyrouter.domain.components.key_manager import KeyManager
from apikeyrouter.domain.components.policy_engine import PolicyEngine
from apikeyrouter.domain.components.quota_awareness_engine import QuotaAwarenessEngine
from apikeyrouter.domain.components.routing_engine import RoutingEngine
from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter, UpstreamSuccess
from apikeyrouter.domain.interfaces.state_store import CircuitPolicy, CircuitSnapshot, StateStore
from apikeyrouter.domain.models.api_key import APIKey, KeyLimits
from apikeyrouter.domain.models.cost_model import UnpricedSpendLimitError
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.provider import Provider
from apikeyrouter.domain.models.quota_state import ExhaustionPrediction, QuotaState
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent, RoutingObjective
from apikeyrouter.domain.models.response import RouterResponse
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.domain.models.trusted import trusted
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.orchestration.context import RouterContext
from apikeyrouter.orchestration.planner import ModelGroup, RoutePlanner
from apikeyrouter.orchestration.recorder import OutcomeRecorder
from apikeyrouter.orchestration.run import Lease, RequestRun, Step
from apikeyrouter.orchestration.selector import DEFAULT_SCAN_LIMIT, KeySelector
from apikeyrouter.orchestration.sync import StoreEventSync
from apikeyrouter.orchestration.write_behind import WriteBehind
from apikeyrouter.router_stream import RoutedStream
from apikeyrouter.utils.bounded_cache import remember
from apikeyrouter.utils.encryption import KeyEncryptor
from apikeyrouter.utils.exceptions import (
    ApiKeyRouterError,
    InvalidRequestError,
    ModelNotFoundError,
    NoKeyAvailableError,
    ProviderNotFoundError,
    RequestDeadlineExceededError,
)
from apikeyrouter.utils.validation import intent_from_openai

_LIMIT_FIELDS = frozenset(KeyLimits.model_fields)
_KEY_FIELDS = frozenset({"weight", "tags", "models", "key_id", "limits"})
_Result = TypeVar("_Result", RouterResponse, RoutedStream)
#: Errors that say "not with this model": the plan's next step (group member, fallback) may
#: serve.
_NEXT_STEP_ERRORS = (NoKeyAvailableError, ModelNotFoundError, UnpricedSpendLimitError)


#: Bound on the per-model cache of serving providers (model names come from callers).
_MAX_CACHED_MODELS = 4096


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
        cost: CostController | None = None,
        policies: PolicyEngine | None = None,
        clock: Callable[[], float] = time.time,
        record_decisions: bool = True,
        write_behind: bool | None = None,
        scan_limit: int | None = DEFAULT_SCAN_LIMIT,
    ) -> None:
        """``write_behind``: write commits and decision records to the store off the request
        path, in batches (see :mod:`apikeyrouter.orchestration.write_behind`), so a request's
        only store round trip is its reservation. Default: on for any store but the in-memory
        one, where an inline write costs nothing; :meth:`flush` writes what is queued.

        ``scan_limit``: routable keys a request gathers per provider before ranking them; a
        larger pool is scanned in turns, each request going on where the last one stopped, so
        routing costs the same for ten thousand keys as for a few dozen (see
        :class:`~apikeyrouter.orchestration.selector.KeySelector`). None: rank every key."""
        store = store if store is not None else InMemoryStateStore()
        keys = KeyManager(store, KeyEncryptor(master_key), clock)
        quota = QuotaAwarenessEngine(
            store,
            clock,
            # The in-memory store's counters are this process's view: no second copy.
            store_counters=store.window_counter if isinstance(store, InMemoryStateStore) else None,
        )
        self.cost = cost if cost is not None else CostController.default(clock=clock)
        engine = RoutingEngine(
            RoutingObjective(objective),
            price_lookup=self._blended_price,
            headroom_lookup=quota.headroom,
        )
        self._ctx = RouterContext(
            store=store,
            keys=keys,
            quota=quota,
            engine=engine,
            failures=FailureHandler(
                retry=retry_policy or RetryPolicy(), circuit=circuit_policy or CircuitPolicy()
            ),
            cost=self.cost,
            policies=policies if policies is not None else PolicyEngine(),
            clock=clock,
            log=get_logger("apikeyrouter.router"),
            record_decisions=record_decisions,
        )
        self.store = store
        self.keys = keys
        self.quota = quota
        self.engine = engine
        self.failures = self._ctx.failures
        self.policies = self._ctx.policies
        self.planner = RoutePlanner()
        self._selector = KeySelector(self._ctx, scan_limit)
        self._providers_by_model: dict[str, frozenset[str]] = {}
        self.recorder = OutcomeRecorder(self._ctx)
        keys.removal_listeners.append(self._key_removed)
        self.sync = StoreEventSync(self._ctx)
        if write_behind is None:
            write_behind = not isinstance(store, InMemoryStateStore)
        self.write_behind = WriteBehind(store, self._ctx.log) if write_behind else None
        self._ctx.write_behind = self.write_behind

    async def start(self, *, ready_timeout: float = 2.0) -> bool:
        """Load keys other processes registered and follow their changes (shared stores).

        True once subscribed and loaded; False for a store without change events (the keys
        are still loaded once)."""
        if not self.sync.enabled:
            await self.keys.load()
            return False
        return await self.sync.start(ready_timeout=ready_timeout)

    @property
    def scan_limit(self) -> int | None:
        """Routable keys gathered per provider before ranking (None: every key)."""
        return self._selector.scan_limit

    @scan_limit.setter
    def scan_limit(self, value: int | None) -> None:
        self._selector.scan_limit = value

    def __repr__(self) -> str:
        return (
            f"ApiKeyRouter(providers={sorted(self._ctx.providers)}, "
            f"keys={len(self.keys.list_keys())}, store={type(self.store).__name__})"
        )

    def _blended_price(self, key: APIKey, model: str) -> float | None:
        """Price per 1M tokens for ranking by cost: input and output weighted equally."""
        price = self.cost.price_for(model, key.provider_id)
        return None if price is None else (price.input + price.output) / 2

    def _key_removed(self, key_id: str) -> None:
        """A revoked or deleted key takes its runtime stats, circuit and quota view with it
        (key ids come and go; nothing per key may outlive the key)."""
        self._ctx.stats.pop(key_id, None)
        self._ctx.circuits.pop(key_id, None)
        self.quota.forget(key_id)

    # --- registration -----------------------------------------------------------------------
    async def register_provider(
        self, provider_id: str, adapter: ProviderAdapter, *, models: Iterable[str] | None = None
    ) -> Provider:
        provider = Provider(
            id=provider_id,
            kind=adapter.kind,
            base_url=adapter.base_url,
            capabilities=adapter.capabilities,
            models=frozenset(models) if models is not None else None,
        )
        self._ctx.providers[provider_id] = provider
        self._ctx.adapters[provider_id] = adapter
        self._providers_by_model.clear()
        return provider

    async def unregister_provider(self, provider_id: str) -> bool:
        """Stop routing to a provider (its keys stay registered, unused, until revoked)."""
        self._ctx.providers.pop(provider_id, None)
        self._providers_by_model.clear()
        adapter = self._ctx.adapters.pop(provider_id, None)
        if adapter is None:
            return False
        await adapter.close()
        return True

    def configure(
        self,
        *,
        retry_policy: RetryPolicy | None = None,
        circuit_policy: CircuitPolicy | None = None,
        objective: RoutingObjective | str | None = None,
    ) -> None:
        """Change routing settings at run time (e.g. on a configuration reload)."""
        if retry_policy is not None:
            self.failures.retry = retry_policy
        if circuit_policy is not None:
            self.failures.circuit = circuit_policy
        if objective is not None:
            self.engine.default_objective = RoutingObjective(objective)

    def providers(self) -> list[Provider]:
        return list(self._ctx.providers.values())

    def adapter(self, provider_id: str) -> ProviderAdapter:
        adapter = self._ctx.adapters.get(provider_id)
        if adapter is None:
            raise ProviderNotFoundError(f"provider {provider_id!r} is not registered")
        return adapter

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
        if provider_id not in self._ctx.providers:
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

    def add_model_group(
        self, name: str, members: Iterable[str | dict[str, Any]], strategy: str = "ordered"
    ) -> ModelGroup:
        """A logical model served by several concrete ones, e.g.
        ``add_model_group("smart", ["openai/gpt-4o", "anthropic/claude-sonnet-4-5"])``."""
        try:
            group = ModelGroup.model_validate(
                {"name": name, "members": list(members), "strategy": strategy}
            )
        except ValueError as exc:
            raise InvalidRequestError(
                f"invalid model group {name!r}: {exc}", param="members"
            ) from exc
        self.planner.add_group(group)
        return group

    def remove_model_group(self, name: str) -> bool:
        return self.planner.remove_group(name)

    def servable_models(self) -> list[str]:
        """Model names a request may use: each provider's list, and the model groups."""
        names: set[str] = {group.name for group in self.planner.groups()}
        for provider in self._ctx.providers.values():
            names.update(provider.models or ())
        return sorted(names)

    # --- routing ----------------------------------------------------------------------------
    def _coerce(self, intent: RequestIntent | dict[str, Any], endpoint: Endpoint) -> RequestIntent:
        if isinstance(intent, RequestIntent):
            return intent
        return intent_from_openai(intent, endpoint)

    def _providers_for(self, model: str) -> frozenset[str]:
        """The providers serving ``model``; cached per model until a provider is registered
        or removed (providers are replaced, never changed in place)."""
        found = self._providers_by_model.get(model)
        if found is None:
            serving = frozenset(p.id for p in self._ctx.providers.values() if p.serves_model(model))
            found = remember(self._providers_by_model, model, serving, _MAX_CACHED_MODELS)
        return found

    def _start_run(
        self, intent: RequestIntent, objective: RoutingObjective | str | None
    ) -> tuple[RequestRun, list[Step]]:
        now = time.monotonic()
        policy = self.policies.resolve(
            model=intent.model,
            client_id=intent.client_id,
            providers=self._providers_for(intent.model),
        )
        retry = self.failures.retry
        budget = intent.timeout_seconds or policy.deadline_seconds or retry.deadline_seconds
        if objective is not None:
            chosen: RoutingObjective | None = RoutingObjective(objective)
        else:
            chosen = intent.objective or policy.objective
        steps = self.planner.steps(intent.model, policy)
        run = RequestRun(
            intent=intent,
            objective=chosen,
            deadline=now + budget,
            started=now,
            policy=policy,
            max_attempts=policy.max_attempts or retry.max_attempts,
            step=steps[0],
            step_intent=intent,
        )
        return run, steps

    def _attempt_timeout(self, run: RequestRun) -> float:
        remaining = run.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestDeadlineExceededError(
                f"request deadline passed after {len(run.attempts)} attempt(s)"
            )
        return min(self.failures.retry.attempt_timeout_seconds, remaining)

    async def route(
        self,
        intent: RequestIntent | dict[str, Any],
        objective: RoutingObjective | str | None = None,
        *,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> RouterResponse:
        """Serve a non-streaming request, failing over across keys, group members and
        fallback models until one succeeds.

        Raises :class:`NoKeyAvailableError` (with ``retry_after``) when no key can serve,
        :class:`UpstreamError` when the upstream rejected the request itself.
        """
        request = self._coerce(intent, endpoint)
        if request.stream:
            raise InvalidRequestError("use stream() for streaming requests", param="stream")
        run, steps = self._start_run(request, objective)
        if len(steps) == 1:  # nothing to fall back to: the plan's bookkeeping is not needed
            run.enter(steps[0])
            return await self._route_step(run)
        return await self._follow_plan(run, steps, self._route_step)

    async def _follow_plan(
        self,
        run: RequestRun,
        steps: list[Step],
        attempt_step: Callable[[RequestRun], Awaitable[_Result]],
    ) -> _Result:
        """Try each step of the plan (the model, its group members, fallbacks) in turn: the
        next one is tried when no key of the current one can serve."""
        last_error: ApiKeyRouterError | None = None
        for index, step in enumerate(steps):
            run.enter(step)
            try:
                return await attempt_step(run)
            except _NEXT_STEP_ERRORS as exc:
                last_error = exc
            except ApiKeyRouterError as exc:
                if not _may_fall_back(exc, run) or index == len(steps) - 1:
                    raise
                last_error = exc
        assert last_error is not None
        raise last_error

    async def _route_step(self, run: RequestRun) -> RouterResponse:
        recorder = self.recorder
        selector = self._selector
        for _ in range(run.max_attempts):
            outcome = await selector.try_acquire(run)
            lease = outcome if isinstance(outcome, Lease) else await selector.acquire(run, outcome)
            try:
                result = await lease.adapter.send(
                    run.step_intent, self.keys.secret(lease.key), self._attempt_timeout(run)
                )
            except BaseException:
                await recorder.abandon(lease)
                raise
            if isinstance(result, UpstreamSuccess):
                await recorder.succeeded(run, lease, result.usage, result.rate_limit)
                await recorder.finish(run, lease)
                return trusted(  # hot path: no re-validation of the body
                    RouterResponse,
                    body=result.body,
                    key_used=lease.key.id,
                    provider_id=lease.key.provider_id,
                    model=run.step_intent.model,
                    usage=result.usage,
                    decision=lease.decision,
                    attempts=run.attempts,
                    latency_ms=round((time.monotonic() - run.started) * 1000.0, 3),
                    cost_usd=lease.cost_estimate.usd,
                    raw_body=result.raw,
                )
            if not await recorder.failed(run, lease, result):
                await recorder.finish(run, lease)
                raise recorder.upstream_error(lease, result)
            await recorder.pause_before_retry(run, result)
        raise self._selector.exhausted_error(run)

    async def open_stream(
        self,
        intent: RequestIntent | dict[str, Any],
        objective: RoutingObjective | str | None = None,
        *,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> RoutedStream:
        """Start a streaming request. Failover (keys, group members, fallbacks) happens until
        the first chunk is in hand; after that a broken stream ends with
        :class:`StreamInterruptedError`."""
        request = self._coerce(intent, endpoint)
        if not request.stream:
            request = request.model_copy(update={"stream": True})
        run, steps = self._start_run(request, objective)
        return await self._follow_plan(run, steps, self._open_step)

    async def _open_step(self, run: RequestRun) -> RoutedStream:
        recorder = self.recorder
        for _ in range(run.max_attempts):
            lease = await self._selector.acquire(run)
            failure: ProviderFailure
            try:
                opened = await lease.adapter.open_stream(
                    run.step_intent, self.keys.secret(lease.key), self._attempt_timeout(run)
                )
                if isinstance(opened, ProviderFailure):
                    failure = opened
                else:
                    stream = RoutedStream(recorder, run, lease, opened)
                    early = await stream.prefetch()
                    if early is None:
                        return stream
                    failure = early
            except BaseException:
                await recorder.abandon(lease)
                raise
            if not await recorder.failed(run, lease, failure):
                await recorder.finish(run, lease)
                raise recorder.upstream_error(lease, failure)
            await recorder.pause_before_retry(run, failure)
        raise self._selector.exhausted_error(run)

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
        key = self.keys.get(key_id)
        await self.flush()
        return await self.quota.quota_state(key)

    async def quota_states(self, key_ids: Iterable[str] | None = None) -> list[QuotaState]:
        """:meth:`quota_state` for many keys (default: every key), in order, with one store
        read: a dashboard or a metrics scrape over ten thousand keys on Redis is one pipelined
        round trip per thousand keys, not one per key."""
        keys = self.keys.list_keys() if key_ids is None else [self.keys.get(k) for k in key_ids]
        await self.flush()
        return await self.quota.quota_states(keys)

    def predict_exhaustion(self, key_id: str) -> ExhaustionPrediction:
        """When the key runs out of its tightest window at the current pace."""
        return self.quota.predict_exhaustion(self.keys.get(key_id))

    async def flush(self) -> None:
        """Write the commits and decision records still queued for the store (write-behind):
        after this, the store's windows and history include every finished request."""
        if self.write_behind is not None:
            await self.write_behind.flush()

    async def recent_decisions(self, limit: int = 50) -> list[RoutingDecision]:
        """The latest routing decisions, including any still queued for the store."""
        await self.flush()
        return await self.store.recent_decisions(limit)

    def stats(self, key_id: str) -> KeyStats:
        return self._ctx.stats.get(key_id, KeyStats())

    async def circuit(self, key_id: str) -> CircuitSnapshot:
        return await self.store.circuit(key_id, self._ctx.clock())

    def on_budget_event(self, listener: Callable[[Any], None]) -> None:
        """Call ``listener`` with every soft/shadow budget event (a BudgetEvent)."""
        self._ctx.budget_listeners.append(listener)

    async def close(self) -> None:
        await self.sync.stop()
        await self.flush()
        for adapter in self._ctx.adapters.values():
            await adapter.close()
        await self.store.close()

    async def __aenter__(self) -> ApiKeyRouter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _may_fall_back(error: ApiKeyRouterError, run: RequestRun) -> bool:
    """A prompt too long for this model may fit the next one in the plan; other caller errors
    would fail the same way everywhere."""
    return bool(run.step_failures) and run.step_failures[-1].kind is FailureKind.CONTEXT_TOO_LONG
