"""Liveness and readiness probes (no auth: orchestrators call them)."""

from __future__ import annotations

from typing import Any

from apikeyrouter.infrastructure.state_store.resilient_store import StoreUnavailableError
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from apikeyrouter_proxy.api.management.deps import RuntimeDep
from apikeyrouter_proxy.services.insight import any_key_routable

router = APIRouter(prefix="/health", tags=["health"])


class Health(BaseModel):
    status: str
    reasons: list[str] = []
    #: The state store: ``kind``, ``status`` (ok, degraded, unavailable) and, for Redis,
    #: ``mode`` (open or closed) and outage counters.
    store: dict[str, Any] | None = None


@router.get("/live", response_model=Health)
async def live() -> Health:
    """200 while the process can answer at all."""
    return Health(status="ok")


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 when the state store answers and at least one key can take traffic; else 503.

    A shared store that is unreachable while the proxy fails open is ``degraded``: still 200,
    since requests are being served (on this replica's own view), with the reason given. Failing
    closed, the same outage is ``unavailable`` and 503, so a load balancer stops sending work
    that would only get 503s."""
    blocking: list[str] = []
    if not runtime.ready:
        blocking.append("the proxy is starting or stopping")
    store = await runtime.store_health()
    notes: list[str] = []
    if store.status == "unavailable":
        blocking.append("the state store is not reachable")
    elif store.status == "degraded":
        notes.append(
            "the state store is not reachable: serving on this replica's own state (fail-open)"
        )
    try:
        routable = store.status != "unavailable" and await any_key_routable(runtime.router)
    except StoreUnavailableError:
        routable = False
    if not routable:
        blocking.append("no key is currently routable")
    status = "unavailable" if blocking else ("degraded" if notes else "ok")
    body = Health(status=status, reasons=blocking + notes, store=store.as_dict())
    return JSONResponse(body.model_dump(), status_code=503 if blocking else 200)
