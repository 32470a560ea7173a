"""Domain models (pydantic v2): keys, providers, quota, decisions, requests, responses."""

from apikeyrouter.domain.models.api_key import (
    APIKey,
    KeyLimits,
    KeyState,
    KeyUsage,
    StateTransition,
)
from apikeyrouter.domain.models.key_stats import KeyStats
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure, RateLimitInfo
from apikeyrouter.domain.models.provider import Provider, ProviderCapabilities
from apikeyrouter.domain.models.quota_state import (
    CapacityState,
    Confidence,
    QuotaState,
    WindowUsage,
)
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent, RoutingObjective
from apikeyrouter.domain.models.response import AttemptRecord, RouterResponse, Usage
from apikeyrouter.domain.models.routing_decision import CandidateScore, RoutingDecision

__all__ = [
    "APIKey",
    "AttemptRecord",
    "CandidateScore",
    "CapacityState",
    "Confidence",
    "Endpoint",
    "FailureKind",
    "KeyLimits",
    "KeyState",
    "KeyStats",
    "KeyUsage",
    "Provider",
    "ProviderCapabilities",
    "ProviderFailure",
    "QuotaState",
    "RateLimitInfo",
    "RequestIntent",
    "RouterResponse",
    "RoutingDecision",
    "RoutingObjective",
    "StateTransition",
    "Usage",
    "WindowUsage",
]
