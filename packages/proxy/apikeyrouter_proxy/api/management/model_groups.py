"""``/api/v1/model-groups``: logical models served by several concrete ones.

Groups from the config file can be replaced or deleted here; the file puts its version back
when a reload changes that group. Groups created here are never touched by a reload.
"""

from __future__ import annotations

from typing import Annotated, Any

from apikeyrouter.orchestration.planner import ModelGroup
from fastapi import APIRouter, Path, Response

from apikeyrouter_proxy.api.management.deps import API_PREFIX, RuntimeDep
from apikeyrouter_proxy.middleware.errors import RouteNotFound
from apikeyrouter_proxy.schemas.errors import error_responses
from apikeyrouter_proxy.schemas.model_groups import (
    GroupMemberView,
    ModelGroupBody,
    ModelGroupDeleted,
    ModelGroupView,
)
from apikeyrouter_proxy.services.runtime import ProxyRuntime

router = APIRouter(prefix=API_PREFIX + "/model-groups", tags=["model-groups"])
_ERRORS = error_responses(400, 401, 403, 404, 422)
GroupName = Annotated[str, Path(min_length=1, max_length=128)]


def _view(runtime: ProxyRuntime, group: ModelGroup) -> ModelGroupView:
    return ModelGroupView(
        name=group.name,
        strategy=group.strategy,
        members=[
            GroupMemberView(model=m.model, provider=m.provider, weight=m.weight)
            for m in group.members
        ],
        source=runtime.service.group_source(group.name),
    )


def _find(runtime: ProxyRuntime, name: str) -> ModelGroup:
    for group in runtime.router.planner.groups():
        if group.name == name:
            return group
    raise RouteNotFound(f"no model group {name!r}", param="group_name", code="group_not_found")


@router.get("", response_model=list[ModelGroupView], responses=_ERRORS)
async def list_groups(runtime: RuntimeDep) -> list[ModelGroupView]:
    return [_view(runtime, g) for g in runtime.router.planner.groups()]


@router.get("/{group_name}", response_model=ModelGroupView, responses=_ERRORS)
async def get_group(group_name: GroupName, runtime: RuntimeDep) -> ModelGroupView:
    return _view(runtime, _find(runtime, group_name))


@router.put(
    "/{group_name}",
    response_model=ModelGroupView,
    responses={**_ERRORS, 201: {"model": ModelGroupView, "description": "Created"}},
)
async def put_group(
    group_name: GroupName, body: ModelGroupBody, runtime: RuntimeDep, response: Response
) -> ModelGroupView:
    """Create (201) or replace (200) a group; requests for ``group_name`` use it at once."""
    existed = runtime.router.planner.is_group(group_name)
    members: list[str | dict[str, Any]] = [
        m if isinstance(m, str) else m.model_dump(exclude_none=True) for m in body.members
    ]
    runtime.service.set_group(group_name, members, body.strategy)
    response.status_code = 200 if existed else 201
    return _view(runtime, _find(runtime, group_name))


@router.delete("/{group_name}", response_model=ModelGroupDeleted, responses=_ERRORS)
async def delete_group(group_name: GroupName, runtime: RuntimeDep) -> ModelGroupDeleted:
    _find(runtime, group_name)
    runtime.service.remove_group(group_name)
    return ModelGroupDeleted(name=group_name)
