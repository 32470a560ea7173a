"""``GET /metrics``: the Prometheus exposition of this app's own registry."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from apikeyrouter_proxy.api.management.deps import RuntimeDep
from apikeyrouter_proxy.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Request counters and latency histograms; key states and remaining quota per key id."""
    exposition = await runtime.metrics.render(runtime.service.router)
    return Response(exposition, media_type=CONTENT_TYPE)
