"""Management API schemas for budgets and spend. The budget itself is the core's ``Budget``."""

from __future__ import annotations

from apikeyrouter.domain.models.cost_model import Budget, ReconciliationStats
from pydantic import BaseModel, Field


class BudgetView(BaseModel):
    id: str
    source: str = Field(description="'config' (config file, clients' budgets) or 'api'.")
    budget: Budget
    spent_usd: float = Field(description="Committed spend in the current period.")
    reserved_usd: float = Field(description="Estimates held by requests in flight.")
    remaining_usd: float
    exceeded: bool
    period_index: str = Field(description="2026-11-29 (day), 2026-11 (month), or the custom index")
    period_start: float
    period_end: float


class BudgetDeleted(BaseModel):
    id: str
    deleted: bool = True
    source: str


class KeySpendView(BaseModel):
    key_id: str
    provider_id: str
    cost_usd: float = Field(description="Actual cost of what this key served (this process).")
    requests: int
    prompt_tokens: int
    completion_tokens: int


class SpendView(BaseModel):
    total_usd: float
    keys: list[KeySpendView]
    budgets: list[BudgetView]
    reconciliation: ReconciliationStats = Field(
        description="How far pre-call cost estimates were from the actual cost."
    )
    unpriced_models: list[str] = Field(description="Models requested that have no price.")
    token_estimates: dict[str, float] = Field(
        description="Prompt-token estimate error: samples, mean absolute/relative error, max."
    )
