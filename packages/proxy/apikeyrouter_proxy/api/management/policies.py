"""``/api/v1/policies``: list, read, create or replace, delete, validate, dry-run.

Policies created here belong to the API (a config reload never touches them) and are saved in
the durable store when there is one. A policy the config file defines can be replaced or
deleted here too, but the file stays its source of truth: the next applied reload puts the
file's version back.
"""

from __future__ import annotations

from typing import Annotated, Any

from apikeyrouter.domain.components.policy_engine import ANY_MODEL
from apikeyrouter.domain.components.policy_loader import validate_policies, validate_policy
from apikeyrouter.domain.models.policy import DryRunReport, Policy, PolicyValidationError
from fastapi import APIRouter, Body, Path, Request, Response

from apikeyrouter_proxy.api.management.deps import API_PREFIX, RuntimeDep
from apikeyrouter_proxy.api.management.validation import from_policy_error
from apikeyrouter_proxy.middleware.errors import RouteNotFound, Unprocessable
from apikeyrouter_proxy.schemas.errors import error_responses
from apikeyrouter_proxy.schemas.openapi import json_body, model_schema
from apikeyrouter_proxy.schemas.policies import (
    DryRunBody,
    PolicyDeleted,
    PolicyView,
    ValidationReport,
)
from apikeyrouter_proxy.services.governance_store import persist_policies
from apikeyrouter_proxy.services.policy_text import read_document
from apikeyrouter_proxy.services.policy_warnings import policy_warnings
from apikeyrouter_proxy.services.runtime import ProxyRuntime

router = APIRouter(prefix=API_PREFIX + "/policies", tags=["policies"])
_ERRORS = error_responses(400, 401, 403, 404, 422)
PolicyName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
_VALIDATE_BODY = {
    "requestBody": {
        "required": True,
        "description": "YAML or JSON text (text/plain, application/yaml), or JSON: a policy "
        'document, a list of policies, one policy, or {"text": "<YAML or JSON>"}.',
        "content": {
            "application/json": {"schema": {}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


def _view(runtime: ProxyRuntime, policy: Policy, warnings: list[str] | None = None) -> PolicyView:
    return PolicyView(
        name=policy.name,
        source=runtime.service.governance.policy_source(policy.name),
        policy=policy,
        warnings=warnings or [],
    )


def _get(runtime: ProxyRuntime, name: str) -> Policy:
    policy = runtime.router.policies.get(name)
    if policy is None:
        raise RouteNotFound(f"no policy named {name!r}", param="name", code="policy_not_found")
    return policy


@router.get("", response_model=list[PolicyView], responses=_ERRORS)
async def list_policies(runtime: RuntimeDep) -> list[PolicyView]:
    """Every policy (enabled or not), by name, with where it came from."""
    return [_view(runtime, p) for p in runtime.router.policies.list()]


@router.post(
    "/validate", response_model=ValidationReport, responses=_ERRORS, openapi_extra=_VALIDATE_BODY
)
async def validate(request: Request, runtime: RuntimeDep) -> ValidationReport:
    """Check a policy document without applying it. Always 200 when the request itself is
    fine: ``valid`` is the verdict and ``problems`` lists every error with its line."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    policies, problems = read_document(await request.body(), media.endswith("json"))
    warnings = [f"{p.name}: {w}" for p in policies for w in policy_warnings(p, runtime)]
    return ValidationReport(
        valid=not problems,
        policies=[p.name for p in policies],
        problems=problems,
        warnings=warnings,
    )


@router.post("/dry-run", response_model=DryRunReport, responses=_ERRORS)
async def dry_run(body: DryRunBody, runtime: RuntimeDep) -> DryRunReport:
    """What upserting the candidate policies would change for the sample requests (or for
    every model and client the policies name), judged on the current keys and providers.
    Nothing is changed."""
    try:
        if isinstance(body.policies, list):
            candidates = validate_policies(body.policies, source="body")
        else:
            candidates = [validate_policy(body.policies, source="body")]
        router_ = runtime.router
        providers = router_.providers()

        def providers_for(model: str) -> list[str]:
            return [p.id for p in providers if model == ANY_MODEL or p.serves_model(model)]

        return router_.policies.dry_run(
            candidates,
            requests=[(r.model, r.client_id) for r in body.requests],
            keys=router_.keys.list_keys(),
            providers_for_model=providers_for,
        )
    except PolicyValidationError as exc:
        raise from_policy_error(exc) from None


@router.get("/{policy_name}", response_model=PolicyView, responses=_ERRORS)
async def get_policy(policy_name: PolicyName, runtime: RuntimeDep) -> PolicyView:
    return _view(runtime, _get(runtime, policy_name))


@router.put(
    "/{policy_name}",
    response_model=PolicyView,
    responses={**_ERRORS, 201: {"model": PolicyView, "description": "Created"}},
    openapi_extra=json_body(model_schema(Policy, optional=("name",))),
)
async def put_policy(
    policy_name: PolicyName,
    body: Annotated[dict[str, Any], Body()],
    runtime: RuntimeDep,
    response: Response,
) -> PolicyView:
    """Create (201) or replace (200) the policy ``policy_name``; the body is the policy, its
    ``name`` optional. Takes effect for the next request. Answers with what it could not find
    (budgets, providers, keys, clients) as ``warnings``."""
    data = dict(body)
    if data.setdefault("name", policy_name) != policy_name:
        raise Unprocessable(
            f"name: the body names a different policy than the URL ({policy_name!r})",
            param="name",
        )
    try:
        policy = validate_policy(data, source="body")
    except PolicyValidationError as exc:
        raise from_policy_error(exc) from None
    previous = runtime.service.governance.put_policy(policy)
    await persist_policies(runtime)
    response.status_code = 201 if previous is None else 200
    return _view(runtime, policy, policy_warnings(policy, runtime))


@router.delete("/{policy_name}", response_model=PolicyDeleted, responses=_ERRORS)
async def delete_policy(policy_name: PolicyName, runtime: RuntimeDep) -> PolicyDeleted:
    governance = runtime.service.governance
    source = governance.policy_source(policy_name)
    _get(runtime, policy_name)
    governance.remove_policy(policy_name)
    await persist_policies(runtime)
    return PolicyDeleted(name=policy_name, source=source)
