"""Pure domain logic: key lifecycle, ranking, failure meanings."""

from apikeyrouter.domain.components.failure_handler import (
    FailureAction,
    FailureHandler,
    RetryPolicy,
)
from apikeyrouter.domain.components.key_manager import KeyManager
from apikeyrouter.domain.components.routing_engine import Candidate, Ranking, RoutingEngine

__all__ = [
    "Candidate",
    "FailureAction",
    "FailureHandler",
    "KeyManager",
    "Ranking",
    "RetryPolicy",
    "RoutingEngine",
]
