"""``/api/v1/keys``: add, list, inspect, update, revoke and rotate keys; read their quota.

Responses never include key material (see :class:`KeyView`). Keys owned by the config file can
be changed here too, but the file stays the source of truth: a reload that changes a key puts
the file's values back.
"""

from __future__ import annotations

from apikeyrouter import KeyLimits
from apikeyrouter.utils.exceptions import InvalidRequestError, ProviderNotFoundError
from fastapi import APIRouter, Query, Response
from pydantic import ValidationError

from apikeyrouter_proxy.api.management.deps import API_PREFIX, Conflict, RuntimeDep
from apikeyrouter_proxy.schemas.errors import error_responses
from apikeyrouter_proxy.schemas.keys import (
    CircuitView,
    KeyCreate,
    KeyQuotaView,
    KeyRotate,
    KeyUpdate,
    KeyView,
    RevokedView,
    WindowView,
)
from apikeyrouter_proxy.services.insight import key_quota

router = APIRouter(prefix=API_PREFIX + "/keys", tags=["keys"])
_ERRORS = error_responses(400, 401, 403, 404, 409, 422)


def _limits(values: dict[str, object]) -> KeyLimits:
    try:
        return KeyLimits.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or "limits"
        raise InvalidRequestError(f"{param}: {first['msg']}", param=param) from None


@router.post("", status_code=201, response_model=KeyView, responses=_ERRORS)
async def add_key(body: KeyCreate, runtime: RuntimeDep) -> KeyView:
    """Register a key with a provider. The secret is encrypted at rest and never returned."""
    service = runtime.service
    if service.provider(body.provider_id) is None:
        raise ProviderNotFoundError(
            f"no provider with id {body.provider_id!r}", param="provider_id"
        )
    if body.id is not None and service.has_key(body.id):
        raise Conflict(f"a key with id {body.id!r} already exists", param="id")
    options: dict[str, object] = {
        "limits": _limits(body.limit_values()),
        "weight": body.weight,
        "tags": body.tags,
        "models": body.models,
    }
    if body.id is not None:
        options["key_id"] = body.id
    key = await service.add_key(
        body.key.get_secret_value(), body.provider_id, options, dict(body.metadata)
    )
    return KeyView.of(key)


@router.get("", response_model=list[KeyView], responses=_ERRORS)
async def list_keys(
    runtime: RuntimeDep,
    response: Response,
    provider_id: str | None = Query(default=None, max_length=64),
    offset: int = Query(default=0, ge=0, description="Keys to skip, in registration order."),
    limit: int | None = Query(
        default=None, ge=1, le=10_000, description="At most this many keys (default: all)."
    ),
) -> list[KeyView]:
    """Every key (optionally one provider's), redacted, in registration order; a page of them
    with ``offset`` and ``limit``. ``X-Total-Count`` says how many there are in all."""
    keys = runtime.service.router.keys.list_keys(provider_id)
    response.headers["X-Total-Count"] = str(len(keys))
    end = None if limit is None else offset + limit
    return [KeyView.of(k) for k in keys[offset:end]]


@router.get("/{key_id}", response_model=KeyView, responses=_ERRORS)
async def get_key(key_id: str, runtime: RuntimeDep) -> KeyView:
    return KeyView.of(runtime.service.router.keys.get(key_id))


@router.patch("/{key_id}", response_model=KeyView, responses=_ERRORS)
async def update_key(key_id: str, body: KeyUpdate, runtime: RuntimeDep) -> KeyView:
    """Change limits, weight, tags, models or state; fields not sent stay as they are."""
    keys = runtime.service.router.keys
    key = keys.get(key_id)
    sent = body.model_fields_set
    limit_changes = body.limit_values(only_set=True)
    limits = _limits({**key.limits.model_dump(), **limit_changes}) if limit_changes else None
    await runtime.service.update_key(
        key_id,
        limits=limits,
        weight=body.weight,
        tags=body.tags,
        models=body.models,
        clear_models="models" in sent and body.models is None,
    )
    if body.state is not None and body.state is not key.state:
        await keys.set_state(
            key_id, body.state, body.reason or "set by an operator", actor="operator"
        )
    return KeyView.of(keys.get(key_id))


@router.delete("/{key_id}", response_model=RevokedView, responses=_ERRORS)
async def revoke_key(key_id: str, runtime: RuntimeDep) -> RevokedView:
    """Revoke a key for good: its secret is deleted; the audit trail keeps the record."""
    transition = await runtime.service.revoke_key(key_id)
    return RevokedView(key_id=key_id, previous_state=transition.from_state, at=transition.at)


@router.post("/{key_id}/rotate", response_model=KeyView, responses=_ERRORS)
async def rotate_key(key_id: str, body: KeyRotate, runtime: RuntimeDep) -> KeyView:
    """Replace the secret behind a key id; its history, limits and metrics stay with the id."""
    keys = runtime.service.router.keys
    key = await keys.rotate(key_id, body.key.get_secret_value(), actor="operator")
    return KeyView.of(key)


@router.get("/{key_id}/quota", response_model=KeyQuotaView, responses=_ERRORS)
async def get_quota(key_id: str, runtime: RuntimeDep) -> KeyQuotaView:
    """Usage of each limit window, capacity state and confidence, the circuit breaker, any
    cooldown, and the predicted exhaustion at the current pace."""
    router_ = runtime.service.router
    quota = await key_quota(router_, router_.keys.get(key_id))
    prediction = router_.predict_exhaustion(key_id)
    circuit = quota.circuit
    return KeyQuotaView(
        key_id=key_id,
        state=quota.key.state,
        routable=quota.routable,
        capacity=quota.quota.capacity.value,
        confidence=quota.quota.confidence.value,
        cooldown_until=quota.key.cooldown_until,
        circuit=CircuitView(
            state=circuit.state.value,
            consecutive_failures=circuit.consecutive_failures,
            open_until=circuit.open_until,
        ),
        windows=[
            WindowView(
                metric=w.metric,
                window_seconds=w.window_seconds,
                limit=w.limit,
                used=w.used,
                reserved=w.reserved,
                remaining=w.remaining,
                utilization=w.utilization,
                resets_at=w.resets_at,
                confidence=w.confidence.value,
            )
            for w in quota.quota.windows
        ],
        prediction=prediction,
    )
