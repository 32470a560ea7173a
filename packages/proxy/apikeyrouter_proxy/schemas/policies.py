"""Management API schemas for policies. The policy itself is the core's ``Policy`` model."""

from __future__ import annotations

from typing import Any

from apikeyrouter.domain.models.policy import Policy, PolicyProblem
from pydantic import BaseModel, ConfigDict, Field


class PolicyView(BaseModel):
    name: str
    source: str = Field(description="'config' (owned by the config file) or 'api'.")
    policy: Policy
    warnings: list[str] = Field(
        default_factory=list,
        description="Things that are allowed but probably wrong (a budget that does not exist).",
    )


class PolicyDeleted(BaseModel):
    name: str
    deleted: bool = True
    source: str


class ValidationReport(BaseModel):
    """``POST /policies/validate`` always answers 200 for a document it could read: whether
    it is valid is the answer, not an error."""

    valid: bool
    policies: list[str] = Field(description="Names of the valid policies found.")
    problems: list[PolicyProblem] = Field(
        description="Every problem, with its line (and column for syntax errors) and field path."
    )
    warnings: list[str] = Field(default_factory=list)


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    client_id: str | None = Field(default=None, min_length=1, max_length=64)


class DryRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: dict[str, Any] | list[dict[str, Any]] = Field(
        description="One candidate policy, or a list of them (each as in PUT /policies/{name})."
    )
    requests: list[SampleRequest] = Field(
        default_factory=list,
        max_length=1000,
        description="Sample requests; none: every model and client the policies name.",
    )
