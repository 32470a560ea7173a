"""The management API under ``/api/v1`` (admin token required on every route)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from apikeyrouter_proxy.api.management import (
    budgets,
    keys,
    model_groups,
    policies,
    providers,
    state,
)
from apikeyrouter_proxy.api.management.deps import API_PREFIX
from apikeyrouter_proxy.middleware.auth import require_admin
from apikeyrouter_proxy.services.governance_store import restore_api_governance
from apikeyrouter_proxy.services.runtime import ProxyRuntime

__all__ = ["API_PREFIX", "include_management_api"]


def include_management_api(app: FastAPI) -> None:
    for module in (keys, providers, policies, budgets, model_groups, state):
        app.include_router(module.router, dependencies=[Depends(require_admin)])
    # Policies and budgets created through the API, saved by an earlier run (durable stores).
    runtime: ProxyRuntime = app.state.runtime
    runtime.on_startup(restore_api_governance)
