"""``/api/v1/providers``: list, add, inspect and check the health of providers."""

from __future__ import annotations

from collections import Counter

from apikeyrouter.utils.exceptions import (
    ConfigurationError,
    InvalidRequestError,
    ProviderNotFoundError,
)
from fastapi import APIRouter
from pydantic import ValidationError

from apikeyrouter_proxy.api.management.deps import API_PREFIX, Conflict, RuntimeDep
from apikeyrouter_proxy.api.management.validation import from_validation_error
from apikeyrouter_proxy.config.provider_options import option_problems
from apikeyrouter_proxy.config.schema import ProviderConfig
from apikeyrouter_proxy.config.yaml_source import format_path
from apikeyrouter_proxy.middleware.errors import Unprocessable
from apikeyrouter_proxy.schemas.errors import error_responses
from apikeyrouter_proxy.schemas.keys import CircuitView
from apikeyrouter_proxy.schemas.providers import (
    KeyHealthView,
    ProviderCreate,
    ProviderHealthView,
    ProviderView,
)
from apikeyrouter_proxy.services.insight import provider_health
from apikeyrouter_proxy.services.router_service import ProviderEntry
from apikeyrouter_proxy.services.runtime import ProxyRuntime

router = APIRouter(prefix=API_PREFIX + "/providers", tags=["providers"])
_ERRORS = error_responses(400, 401, 403, 404, 409, 422)


def _view(runtime: ProxyRuntime, provider_id: str, entry: ProviderEntry) -> ProviderView:
    keys = runtime.service.router.keys.list_keys(provider_id)
    config = entry.config
    return ProviderView(
        id=provider_id,
        kind=config.kind,
        base_url=config.effective_base_url,
        models=list(config.models) if config.models is not None else None,
        source=entry.source,
        capabilities=entry.adapter.capabilities.model_dump(),
        keys=len(keys),
        keys_by_state=dict(Counter(k.state.value for k in keys)),
    )


def _entry(runtime: ProxyRuntime, provider_id: str) -> ProviderEntry:
    entry = runtime.service.provider(provider_id)
    if entry is None:
        raise ProviderNotFoundError(f"no provider with id {provider_id!r}", param="provider_id")
    return entry


@router.get("", response_model=list[ProviderView], responses=_ERRORS)
async def list_providers(runtime: RuntimeDep) -> list[ProviderView]:
    return [_view(runtime, pid, entry) for pid, entry in runtime.service.providers().items()]


@router.post("", status_code=201, response_model=ProviderView, responses=_ERRORS)
async def add_provider(body: ProviderCreate, runtime: RuntimeDep) -> ProviderView:
    """Register a provider of any kind (``options`` as in the config file); add its keys with
    ``POST /api/v1/keys``."""
    if runtime.service.provider(body.id) is not None:
        raise Conflict(f"a provider with id {body.id!r} already exists", param="id")
    try:
        config = ProviderConfig.model_validate(body.model_dump())
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    problems = option_problems(config)
    if problems:
        param = format_path(("options", *problems[0][0]))
        detail = "; ".join(f"{format_path(('options', *loc))}: {m}" for loc, m in problems)
        raise Unprocessable(detail, param=param)
    try:
        entry = await runtime.service.add_provider(config)
    except ConfigurationError as exc:
        raise InvalidRequestError(exc.message, param="kind") from None
    return _view(runtime, body.id, entry)


@router.get("/{provider_id}", response_model=ProviderView, responses=_ERRORS)
async def get_provider(provider_id: str, runtime: RuntimeDep) -> ProviderView:
    return _view(runtime, provider_id, _entry(runtime, provider_id))


@router.get("/{provider_id}/health", response_model=ProviderHealthView, responses=_ERRORS)
async def get_provider_health(provider_id: str, runtime: RuntimeDep) -> ProviderHealthView:
    """Key states and circuit breakers of one provider, summarised and per key."""
    _entry(runtime, provider_id)
    health = await provider_health(runtime.service.router, provider_id)
    return ProviderHealthView(
        provider_id=provider_id,
        status=health.status,
        routable_keys=health.routable_keys,
        keys_by_state=health.keys_by_state,
        circuits=health.circuits,
        keys=[
            KeyHealthView(
                key_id=q.key.id,
                state=q.key.state.value,
                routable=q.routable,
                cooldown_until=q.key.cooldown_until,
                circuit=CircuitView(
                    state=q.circuit.state.value,
                    consecutive_failures=q.circuit.consecutive_failures,
                    open_until=q.circuit.open_until,
                ),
            )
            for q in health.keys
        ],
    )
