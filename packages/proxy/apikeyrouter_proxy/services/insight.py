"""Read-only views over the router's state: quota per key, provider health, readiness.

Shared by the management API, the readiness probe and the metrics scrape, so the three never
disagree about what "routable" or "remaining" means.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from apikeyrouter import APIKey, ApiKeyRouter
from apikeyrouter.domain.interfaces.state_store import CircuitSnapshot, CircuitState
from apikeyrouter.domain.models.api_key import ROUTABLE_STATES, SELF_HEALING_STATES
from apikeyrouter.domain.models.quota_state import QuotaState


def is_routable(key: APIKey, now: float) -> bool:
    """Could this key take traffic now, judging by its state and cooldown alone?"""
    cooling = key.cooldown_until is not None and key.cooldown_until > now
    if key.state in ROUTABLE_STATES:
        return not cooling
    return key.state in SELF_HEALING_STATES and key.cooldown_until is not None and not cooling


@dataclass(frozen=True, slots=True)
class KeyQuota:
    key: APIKey
    quota: QuotaState  # one window per configured (or provider-reported) limit
    circuit: CircuitSnapshot
    routable: bool


async def key_quota(router: ApiKeyRouter, key: APIKey, now: float | None = None) -> KeyQuota:
    return (await key_quotas(router, [key], now))[0]


async def key_quotas(
    router: ApiKeyRouter, keys: list[APIKey], now: float | None = None
) -> list[KeyQuota]:
    """:func:`key_quota` for many keys with two store reads in all, not two per key (on
    Redis: one pipelined round trip each per thousand keys)."""
    at = time.time() if now is None else now
    ids = [key.id for key in keys]
    quotas = await router.quota_states(ids)
    circuits = await router.store.circuits(ids, at)
    return [
        _key_quota(key, quota, circuit, at)
        for key, quota, circuit in zip(keys, quotas, circuits, strict=True)
    ]


def _circuit_open(circuit: CircuitSnapshot, at: float) -> bool:
    """An open breaker keeps the key out of routing until its timer runs out."""
    return circuit.state is CircuitState.OPEN and (circuit.open_until or 0.0) > at


def _key_quota(key: APIKey, quota: QuotaState, circuit: CircuitSnapshot, at: float) -> KeyQuota:
    routable = is_routable(key, at) and not _circuit_open(circuit, at)
    return KeyQuota(key, quota, circuit, routable)


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider_id: str
    status: str  # "healthy" | "degraded" | "down" | "no_keys"
    keys_by_state: dict[str, int]
    circuits: dict[str, int]
    routable_keys: int
    keys: list[KeyQuota]


async def provider_health(
    router: ApiKeyRouter, provider_id: str, now: float | None = None
) -> ProviderHealth:
    at = time.time() if now is None else now
    quotas = await key_quotas(router, router.keys.list_keys(provider_id), at)
    by_state = Counter(q.key.state.value for q in quotas)
    circuits = Counter(q.circuit.state.value for q in quotas)
    routable = sum(1 for q in quotas if q.routable)
    if not quotas:
        status = "no_keys"
    elif routable == 0:
        status = "down"
    elif routable < len(quotas):
        status = "degraded"
    else:
        status = "healthy"
    return ProviderHealth(provider_id, status, dict(by_state), dict(circuits), routable, quotas)


def routable_key_count(router: ApiKeyRouter, now: float | None = None) -> int:
    """Keys whose state and cooldown allow traffic (circuits not consulted: no store calls)."""
    at = time.time() if now is None else now
    return sum(1 for key in router.keys.list_keys() if is_routable(key, at))


async def any_key_routable(router: ApiKeyRouter, now: float | None = None) -> bool:
    """True as soon as one key could take traffic, its circuit breaker included."""
    at = time.time() if now is None else now
    for key in router.keys.list_keys():
        if not is_routable(key, at):
            continue
        circuit = await router.store.circuit(key.id, at)
        if not _circuit_open(circuit, at):
            return True
    return False
