"""Management API schemas for model groups."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GroupMemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    provider: str | None = Field(default=None, min_length=1, max_length=64)
    weight: float = Field(default=1.0, gt=0, le=1_000_000)


class ModelGroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: list[str | GroupMemberBody] = Field(
        min_length=1,
        max_length=64,
        description="'provider/model', 'model', or {model, provider, weight}; tried in order "
        "(ordered) or picked by weight (weighted).",
    )
    strategy: Literal["ordered", "weighted"] = "ordered"


class GroupMemberView(BaseModel):
    model: str
    provider: str | None = None
    weight: float


class ModelGroupView(BaseModel):
    name: str
    strategy: str
    members: list[GroupMemberView]
    source: str = Field(description="'config' or 'api'.")


class ModelGroupDeleted(BaseModel):
    name: str
    deleted: bool = True
