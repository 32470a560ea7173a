"""Policies and budgets created through the API, kept in the durable store when there is one.

Config-owned policies and budgets come back from the file at every start; the API-owned ones
would be lost with the process, so with a durable store (``mongo``, ``redis+mongo``) every API
change is written there, and a startup hook puts them back. Without one they live as long as
the process (and the docs say so).
"""

from __future__ import annotations

from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter_proxy.services.governance import SOURCE_API
from apikeyrouter_proxy.services.runtime import ProxyRuntime

_log = get_logger("apikeyrouter.proxy.governance")


async def persist_policies(runtime: ProxyRuntime) -> None:
    """Store the API-owned policies as the durable set (after any API change to them)."""
    durable = runtime.durable
    if durable is None:
        return
    governance = runtime.service.governance
    owned = [
        p for p in runtime.router.policies.list() if governance.policy_source(p.name) == SOURCE_API
    ]
    await durable.save_policies(owned)


async def persist_budget(runtime: ProxyRuntime, budget_id: str) -> None:
    """Write (or delete) one API-owned budget in the durable store."""
    durable = runtime.durable
    if durable is None or runtime.service.governance.budget_source(budget_id) != SOURCE_API:
        return
    budget = runtime.router.cost.get_budget(budget_id)
    if budget is None:
        await durable.delete_budget(budget_id)
    else:
        await durable.save_budget(budget)


async def restore_api_governance(runtime: ProxyRuntime) -> None:
    """Startup hook: the API-owned policies and budgets saved by an earlier run (or another
    replica). Names the config file now defines are skipped: the file wins."""
    durable = runtime.durable
    if durable is None:
        return
    governance = runtime.service.governance
    skipped: list[str] = []
    for policy in await durable.load_policies():
        if governance.policy_source(policy.name) == SOURCE_API:
            governance.put_policy(policy)
        else:
            skipped.append(f"policy {policy.name}")
    for budget in await durable.load_budgets():
        if governance.budget_source(budget.id) == SOURCE_API:
            governance.put_budget(budget)
        else:
            skipped.append(f"budget {budget.id}")
    if skipped:
        _log.warning("stored_governance_shadowed_by_config", items=skipped)
