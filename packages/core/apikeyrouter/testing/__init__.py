"""Testing helpers that ship with apikeyrouter: a simulated OpenAI-compatible provider.

``SimulatedProvider`` is an ASGI app with per-key token-bucket limits, real rate-limit headers,
latency and failure injection. Use it in-process (``httpx.ASGITransport(app=provider)``), over
HTTP from a background thread (``with run_simulator_in_thread(provider) as server:``) or from the
command line (``python -m apikeyrouter.testing --key sk-a:rpm=60``). Serving over HTTP needs
uvicorn (the ``simulator`` extra); it is imported only when a server is started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .simulator.config import SimKeyConfig, mask_key
from .simulator.faults import Fault, FaultMode
from .simulator.provider import DEFAULT_MODELS, UNKNOWN_LABEL, SimulatedProvider
from .simulator.stats import KeyStats

if TYPE_CHECKING:
    from .simulator.server import (
        SimulatorAddress,
        SimulatorServer,
        run_simulator,
        run_simulator_in_thread,
        serve_simulator,
    )

__all__ = [
    "DEFAULT_MODELS",
    "UNKNOWN_LABEL",
    "Fault",
    "FaultMode",
    "KeyStats",
    "SimKeyConfig",
    "SimulatedProvider",
    "SimulatorAddress",
    "SimulatorServer",
    "mask_key",
    "run_simulator",
    "run_simulator_in_thread",
    "serve_simulator",
]

_SERVER_NAMES = frozenset(
    {"SimulatorAddress", "SimulatorServer", "run_simulator", "run_simulator_in_thread",
     "serve_simulator"}
)  # fmt: skip


def __getattr__(name: str) -> Any:
    # uvicorn is an optional dependency: import the server module only when it is asked for.
    if name in _SERVER_NAMES:
        from .simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
