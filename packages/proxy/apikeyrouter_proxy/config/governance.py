"""Checks across the policy and budget sections that no single field can make.

Policy names and budget ids identify what the management API edits, so they must be unique
across the inline list, the policies file and the budgets derived from clients. A policy that
names a budget which does not exist would be silently unbudgeted at run time (the core skips
unknown budget ids), so the config refuses it: an operator who wrote ``budgets: [org-month]``
believes spend is capped. Problems come back as (field path, message) so the loader can add the
line of each one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

from apikeyrouter.domain.models.cost_model import Budget
from apikeyrouter.domain.models.policy import Policy

from apikeyrouter_proxy.config.schema import AuthConfig

FieldPath = tuple[str | int, ...]
Problem = tuple[FieldPath, str]

#: Client field -> budget period of the budget it becomes.
CLIENT_BUDGET_FIELDS = (("budget_usd_per_day", "day"), ("budget_usd_per_month", "month"))
_BUDGET_ID_MAX = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def client_budget_id(client_id: str, period: str) -> str:
    """``client-web-day``. Budget ids allow fewer characters (no ``:``) and fewer of them than
    client ids, so unusual ids are sanitised, and overlong ones replaced by a digest."""
    candidate = f"client-{_UNSAFE.sub('_', client_id)}-{period}"
    if len(candidate) <= _BUDGET_ID_MAX:
        return candidate
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:16]
    return f"client-{digest}-{period}"


def client_budgets(auth: AuthConfig) -> Iterator[tuple[FieldPath, Budget]]:
    """The hard, client-scoped budgets that ``budget_usd_per_day``/``_per_month`` stand for."""
    for index, client in enumerate(auth.clients):
        for field, period in CLIENT_BUDGET_FIELDS:
            limit = getattr(client, field)
            if limit is None:
                continue
            budget = Budget(
                id=client_budget_id(client.id, period),
                scope="client",
                scope_value=client.id,
                limit_usd=limit,
                period=period,
                enforcement="hard",
                description=f"auth.clients[{client.id}].{field}",
            )
            yield ("auth", "clients", index, field), budget


def config_budgets(budgets: Sequence[Budget], auth: AuthConfig) -> list[Budget]:
    """Every budget the config defines: the ``budgets`` list, then the clients' budgets."""
    return [*budgets, *(budget for _, budget in client_budgets(auth))]


def governance_problems(
    policies: Sequence[Policy],
    file_policies: Sequence[Policy],
    budgets: Sequence[Budget],
    auth: AuthConfig,
    file_label: str = "the policies file",
) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, str] = {}
    for index, policy in enumerate(policies):
        if policy.name in names:
            message = f"duplicate policy name {policy.name!r} (also at {names[policy.name]})"
            problems.append((("policies", index, "name"), message))
        names.setdefault(policy.name, f"policies[{index}]")
    for index, policy in enumerate(file_policies):
        if policy.name in names:
            message = (
                f"policy {policy.name!r} in {file_label} is already defined at {names[policy.name]}"
            )
            problems.append((("policies_file",), message))
        names.setdefault(policy.name, f"{file_label}, policies[{index}]")
    defined: dict[str, str] = {}
    located: list[tuple[FieldPath, Budget]] = [
        (("budgets", index, "id"), budget) for index, budget in enumerate(budgets)
    ]
    located.extend(client_budgets(auth))
    for path, budget in located:
        if budget.id in defined:
            message = f"budget id {budget.id!r} is already used by {defined[budget.id]}"
            problems.append((path, message))
        defined.setdefault(budget.id, _describe(path))
    hint = "define it under budgets (or give a client budget_usd_per_day/per_month)"
    for index, policy in enumerate(policies):
        for ref_index, ref in enumerate(policy.budgets or ()):
            if ref not in defined:
                problems.append(
                    (("policies", index, "budgets", ref_index), f"unknown budget {ref!r}: {hint}")
                )
    for policy in file_policies:
        for ref in policy.budgets or ():
            if ref not in defined:
                message = f"policy {policy.name!r} in {file_label} names unknown budget {ref!r}"
                problems.append((("policies_file",), f"{message}: {hint}"))
    return problems


def _describe(path: FieldPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text
