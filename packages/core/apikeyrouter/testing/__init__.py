"""Testing helpers that ship with apikeyrouter: a simulated LLM provider.

``SimulatedProvider`` is an ASGI app that speaks the OpenAI, Anthropic (``/v1/messages``,
``x-api-key``) and Gemini (``/v1beta/models/...``, ``x-goog-api-key``) wire formats, with per-key
token-bucket limits, each format's rate-limit headers and error bodies, latency and failure
injection. Use it in-process (``httpx.ASGITransport(app=provider)``), over
HTTP from a background thread (``with run_simulator_in_thread(provider) as server:``) or from the
command line (``python -m apikeyrouter.testing --key sk-a:rpm=60``). Serving over HTTP needs
uvicorn (the ``simulator`` extra); it is imported only when a server is started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .simulator.config import SimKeyConfig, mask_key
from .simulator.faults import Fault, FaultMode
from .simulator.native import SAFETY_TRIGGER, TOOL_TRIGGER
from .simulator.provider import (
    DEFAULT_ANTHROPIC_MODELS,
    DEFAULT_GEMINI_MODELS,
    DEFAULT_MODELS,
    UNKNOWN_LABEL,
    SimulatedProvider,
)
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
    "DEFAULT_ANTHROPIC_MODELS",
    "DEFAULT_GEMINI_MODELS",
    "DEFAULT_MODELS",
    "SAFETY_TRIGGER",
    "TOOL_TRIGGER",
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
