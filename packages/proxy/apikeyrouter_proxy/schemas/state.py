"""Management API schemas for the proxy's state."""

from __future__ import annotations

from pydantic import BaseModel


class ConfigStatusView(BaseModel):
    path: str | None = None
    reloads_applied: int
    reloads_rejected: int
    last_applied_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_changes: dict[str, list[str]]


class SummaryView(BaseModel):
    ready: bool
    uptime_seconds: float
    keys_total: int
    keys_by_state: dict[str, int]
    routable_keys: int
    providers: list[str]
    clients: list[str]
    requests_served: int
    requests_by_status_class: dict[str, int]
    config: ConfigStatusView
