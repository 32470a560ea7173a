"""Things a valid policy may name that do not exist (yet): said, not refused.

A policy may legitimately be created before the budget, key or client it mentions (the API has
no transactions across resources), so the management API accepts it and lists what it could
not find: a typo in ``deny_keys`` would otherwise silently deny nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from apikeyrouter.domain.models.policy import Policy
from apikeyrouter.utils.exceptions import KeyNotFoundError
from apikeyrouter_proxy.services.runtime import ProxyRuntime


def policy_warnings(policy: Policy, runtime: ProxyRuntime) -> list[str]:
    router = runtime.router
    providers = {p.id for p in router.providers()}
    clients = set(runtime.clients.ids())
    warnings = [
        f"budget {ref!r} does not exist"
        for ref in policy.budgets or ()
        if router.cost.get_budget(ref) is None
    ]
    named_providers: Iterable[str] = [
        *(policy.allow_providers or ()),
        *(policy.deny_providers or ()),
    ]
    if policy.scope.kind == "provider" and policy.scope.value is not None:
        named_providers = [*named_providers, policy.scope.value]
    warnings.extend(
        f"provider {p!r} is not registered"
        for p in dict.fromkeys(named_providers)
        if p not in providers
    )
    named_keys = [*(policy.allow_keys or ()), *(policy.deny_keys or ())]
    if policy.scope.kind == "key" and policy.scope.value is not None:
        named_keys.append(policy.scope.value)
    for key_id in dict.fromkeys(named_keys):
        try:
            router.keys.get(key_id)
        except KeyNotFoundError:
            warnings.append(f"key {key_id!r} does not exist")
    scope = policy.scope
    if scope.kind == "client" and clients and scope.value not in clients:
        warnings.append(f"client {scope.value!r} is not configured under auth.clients")
    return warnings
