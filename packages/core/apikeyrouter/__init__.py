"""apikeyrouter: route LLM requests across many API keys and providers.

Quota-aware, fails over on rate limits, dead keys and outages, and explains every decision.
"""

from apikeyrouter.domain.components.failure_handler import RetryPolicy
from apikeyrouter.domain.interfaces.state_store import CircuitPolicy
from apikeyrouter.domain.models import (
    APIKey,
    Endpoint,
    KeyLimits,
    KeyState,
    QuotaState,
    RequestIntent,
    RouterResponse,
    RoutingDecision,
    RoutingObjective,
    Usage,
)
from apikeyrouter.infrastructure.adapters.openai_adapter import OpenAIAdapter
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.router import ApiKeyRouter
from apikeyrouter.router_stream import RoutedStream
from apikeyrouter.utils.exceptions import (
    ApiKeyRouterError,
    InvalidRequestError,
    ModelNotFoundError,
    NoKeyAvailableError,
    ProvidersUnavailableError,
    RequestDeadlineExceededError,
    StreamInterruptedError,
    UpstreamError,
)

__version__ = "0.1.0"

__all__ = [
    "APIKey",
    "ApiKeyRouter",
    "ApiKeyRouterError",
    "CircuitPolicy",
    "Endpoint",
    "InMemoryStateStore",
    "InvalidRequestError",
    "KeyLimits",
    "KeyState",
    "ModelNotFoundError",
    "NoKeyAvailableError",
    "OpenAIAdapter",
    "ProvidersUnavailableError",
    "QuotaState",
    "RequestDeadlineExceededError",
    "RequestIntent",
    "RetryPolicy",
    "RoutedStream",
    "RouterResponse",
    "RoutingDecision",
    "RoutingObjective",
    "StreamInterruptedError",
    "UpstreamError",
    "Usage",
    "__version__",
]
