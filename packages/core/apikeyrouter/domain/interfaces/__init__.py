"""Ports the domain depends on; infrastructure implements them."""

from apikeyrouter.domain.interfaces.provider_adapter import (
    AdapterResult,
    ProviderAdapter,
    StreamResult,
    UpstreamStream,
    UpstreamSuccess,
)
from apikeyrouter.domain.interfaces.state_store import (
    CircuitPolicy,
    CircuitSnapshot,
    CircuitState,
    Reservation,
    ReservationRefusal,
    ReservationRequest,
    StateStore,
    WindowLimit,
)

__all__ = [
    "AdapterResult",
    "CircuitPolicy",
    "CircuitSnapshot",
    "CircuitState",
    "ProviderAdapter",
    "Reservation",
    "ReservationRefusal",
    "ReservationRequest",
    "StateStore",
    "StreamResult",
    "UpstreamStream",
    "UpstreamSuccess",
    "WindowLimit",
]
