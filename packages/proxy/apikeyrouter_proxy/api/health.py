"""Liveness and readiness probes (no auth: orchestrators call them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from apikeyrouter_proxy.api.management.deps import RuntimeDep
from apikeyrouter_proxy.services.insight import any_key_routable

router = APIRouter(prefix="/health", tags=["health"])


class Health(BaseModel):
    status: str
    reasons: list[str] = []


@router.get("/live", response_model=Health)
async def live() -> Health:
    """200 while the process can answer at all."""
    return Health(status="ok")


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 when the state store answers and at least one key can take traffic; else 503."""
    reasons: list[str] = []
    if not runtime.ready:
        reasons.append("the proxy is starting or stopping")
    try:
        store_ok = await runtime.service.router.store.ping()
    except Exception:
        store_ok = False
    if not store_ok:
        reasons.append("the state store is not reachable")
    if not store_ok or not await any_key_routable(runtime.service.router):
        reasons.append("no key is currently routable")
    body = Health(status="unavailable" if reasons else "ok", reasons=reasons)
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)
