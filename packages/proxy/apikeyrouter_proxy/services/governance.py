"""Policies, budgets and price overrides: kept in step with the config, editable through the API.

The rules mirror those for keys. The config file is the source of truth for the policies and
budgets it defines: every applied reload puts them back as written (an API edit to one of them
lasts until then), and ones that disappear from the file are removed. Policies and budgets
created through the management API belong to the API: a reload never touches them, and a
file that tries to define one with the same name is rejected rather than silently taking it
over. Everything that can fail is checked in :meth:`Governance.plan`, before the reload
changes anything; :meth:`Governance.apply` only swaps in-memory tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from apikeyrouter import ApiKeyRouter
from apikeyrouter.domain.models.cost_model import Budget, ModelPrice
from apikeyrouter.domain.models.policy import Policy
from apikeyrouter.infrastructure.config.pricing_loader import load_default_pricing
from apikeyrouter.utils.exceptions import ConfigurationError
from apikeyrouter_proxy.config.governance import config_budgets
from apikeyrouter_proxy.config.loaded import ConfigFiles
from apikeyrouter_proxy.config.resolve import check_and_read
from apikeyrouter_proxy.config.settings import ProxyConfig

SOURCE_CONFIG = "config"
SOURCE_API = "api"


@dataclass(frozen=True, slots=True)
class GovernancePlan:
    """What a config asks for, validated: applied as a whole or not at all."""

    policies: dict[str, Policy]
    budgets: dict[str, Budget]
    pricing: Mapping[str, ModelPrice]


@dataclass(slots=True)
class GovernanceChanges:
    policies_set: list[str]
    policies_removed: list[str]
    budgets_set: list[str]
    budgets_removed: list[str]
    pricing_models: list[str]


def _files_of(config: ProxyConfig) -> ConfigFiles:
    """The config's files: read by the loader, or now (relative to the working directory) for
    a config built in code, with the loader's checks."""
    if config.files is not None:
        return config.files
    files, issues = check_and_read(config, Path.cwd())
    if issues:
        detail = "; ".join(str(issue) for issue in issues)
        raise ConfigurationError(f"invalid configuration: {detail}", param=issues[0].path or None)
    return files


class Governance:
    def __init__(self, router: ApiKeyRouter) -> None:
        self._router = router
        self._config_policies: dict[str, Policy] = {}
        self._config_budgets: dict[str, Budget] = {}
        self._pricing: Mapping[str, ModelPrice] = {}

    # --- ownership ----------------------------------------------------------------------------
    def policy_source(self, name: str) -> str:
        return SOURCE_CONFIG if name in self._config_policies else SOURCE_API

    def budget_source(self, budget_id: str) -> str:
        return SOURCE_CONFIG if budget_id in self._config_budgets else SOURCE_API

    def _api_policies(self) -> set[str]:
        return {p.name for p in self._router.policies.list()} - set(self._config_policies)

    def _api_budgets(self) -> set[str]:
        return {b.id for b in self._router.cost.budgets()} - set(self._config_budgets)

    # --- reload -------------------------------------------------------------------------------
    def plan(self, config: ProxyConfig) -> GovernancePlan:
        """Validate ``config``'s policies, budgets and prices against the running state."""
        files = _files_of(config)
        policies = {p.name: p for p in (*config.policies, *files.policies)}
        budgets = {b.id: b for b in config_budgets(config.budgets, config.auth)}
        taken = sorted(self._api_policies() & set(policies))
        if taken:
            raise ConfigurationError(
                f"policy name(s) {', '.join(taken)} already used by policies created through "
                "the API (delete them there first)",
                param="policies",
            )
        taken = sorted(self._api_budgets() & set(budgets))
        if taken:
            raise ConfigurationError(
                f"budget id(s) {', '.join(taken)} already used by budgets created through the "
                "API (delete them there first)",
                param="budgets",
            )
        return GovernancePlan(policies, budgets, dict(files.pricing))

    def apply(self, plan: GovernancePlan) -> GovernanceChanges:
        """Swap in the planned tables (no awaits: no request sees half of a change)."""
        router = self._router
        engine = router.policies
        kept = [p for p in engine.list() if p.name not in self._config_policies]
        kept = [p for p in kept if p.name not in plan.policies]
        policies_set = [n for n, p in plan.policies.items() if engine.get(n) != p]
        policies_removed = [n for n in self._config_policies if n not in plan.policies]
        engine.replace_all([*kept, *plan.policies.values()])
        self._config_policies = dict(plan.policies)
        cost = router.cost
        budgets_removed = [b for b in self._config_budgets if b not in plan.budgets]
        for budget_id in budgets_removed:
            cost.remove_budget(budget_id)
        budgets_set = []
        for budget in plan.budgets.values():
            if cost.get_budget(budget.id) != budget:
                cost.add_budget(budget)  # replacing keeps the period's spend (same counter)
                budgets_set.append(budget.id)
        self._config_budgets = dict(plan.budgets)
        return GovernanceChanges(
            policies_set, policies_removed, budgets_set, budgets_removed, self._apply_pricing(plan)
        )

    def _apply_pricing(self, plan: GovernancePlan) -> list[str]:
        """Load the new overrides; models no longer overridden get the shipped price back (a
        model the shipped table lacks keeps its last price until restart: the controller
        cannot forget a model, and an unpriced model is better than a wrong one anyway)."""
        if plan.pricing == self._pricing:
            return []
        shipped = load_default_pricing()
        dropped = {n: shipped[n] for n in self._pricing if n not in plan.pricing and n in shipped}
        changed = sorted(
            {n for n, p in plan.pricing.items() if self._pricing.get(n) != p} | set(dropped)
        )
        self._router.cost.load_overrides({**dropped, **plan.pricing})
        self._pricing = dict(plan.pricing)
        return changed

    # --- the management API -------------------------------------------------------------------
    def put_policy(self, policy: Policy) -> Policy | None:
        """Create or replace; the previous version, if any. A config-owned policy stays
        config-owned: the file puts its own version back on the next reload."""
        return self._router.policies.upsert(policy)

    def remove_policy(self, name: str) -> bool:
        return self._router.policies.remove(name)

    def put_budget(self, budget: Budget) -> Budget | None:
        cost = self._router.cost
        previous = cost.get_budget(budget.id)
        cost.add_budget(budget)
        return previous

    def remove_budget(self, budget_id: str) -> bool:
        return self._router.cost.remove_budget(budget_id)
