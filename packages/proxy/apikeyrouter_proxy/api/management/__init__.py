"""The management API under ``/api/v1`` (admin token required on every route)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from apikeyrouter_proxy.api.management import keys, providers, state
from apikeyrouter_proxy.api.management.deps import API_PREFIX
from apikeyrouter_proxy.middleware.auth import require_admin

__all__ = ["API_PREFIX", "include_management_api"]


def include_management_api(app: FastAPI) -> None:
    for module in (keys, providers, state):
        app.include_router(module.router, dependencies=[Depends(require_admin)])
