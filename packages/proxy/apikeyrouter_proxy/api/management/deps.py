"""What management routes depend on: the runtime (from app state), behind the admin check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from apikeyrouter_proxy.middleware.errors import ProxyError
from apikeyrouter_proxy.services.runtime import ProxyRuntime


def get_runtime(request: Request) -> ProxyRuntime:
    runtime: ProxyRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ProxyRuntime, Depends(get_runtime)]


class Conflict(ProxyError):
    status = 409
    error_type = "conflict_error"
    code = "conflict"


#: Every management route's path starts with this (full paths keep metric route labels exact).
API_PREFIX = "/api/v1"
