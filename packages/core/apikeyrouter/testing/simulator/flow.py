"""The request flow all wire formats share, with the format-specific parts left abstract.

Whatever the format, one request goes: authenticate the key (401), validate (400/404), decide
admission under the provider lock (injected status fault, quota, buckets), wait the simulated
latency and any ``timeout`` hold, then answer (possibly cut short by ``drop_stream`` or
``stream_error``), counting each step into the key's statistics. Keeping that sequence in one
place is what makes a key behave identically over OpenAI, Anthropic and Gemini; a format only
says how its errors, headers and bodies are spelled.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .asgi import Headers, Receive, Send, SimulatedDisconnect, send_json
from .errors import ApiError
from .faults import Fault, FaultMode
from .holds import HoldOutcome
from .limiter import Decision, HeaderFn, KeyState, Outcome
from .streaming import Cut

if TYPE_CHECKING:
    from .provider import SimulatedProvider

__all__ = ["Call", "FormatApi", "Refusal", "is_stream_error"]


@dataclass(slots=True)
class Call:
    """One authenticated request: its key, its ASGI channels and its id.

    ``headers`` go out with every answer to the call (Anthropic's ``request-id``); ``model`` is
    filled in once the request names one (Gemini's quota errors mention it).
    """

    state: KeyState
    receive: Receive
    send: Send
    rid: int
    headers: Headers = field(default_factory=list)
    model: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error answer: status, body, extra headers, and the status it counts as in statistics
    when that differs (a refused credential always counts as ``status_401``)."""

    status: int
    payload: dict[str, Any]
    headers: Headers = field(default_factory=list)
    counted_as: int | None = None


class FormatApi(ABC):
    """Base of the OpenAI, Anthropic and Gemini front ends of one :class:`SimulatedProvider`."""

    def __init__(self, provider: SimulatedProvider, ids: Iterator[int]) -> None:
        self._p = provider
        self._ids = ids  # shared by the formats: request ids are unique per provider

    # -- what each format spells its own way --------------------------------------------------

    @abstractmethod
    def catalog(self) -> frozenset[str]:
        """The models this format serves."""

    @abstractmethod
    def model_not_found(self, model: str, method: str) -> ApiError:
        """The 404 for a model this format or key does not serve (``method``: what was asked)."""

    @abstractmethod
    def auth_refusal(self, key: str | None) -> Refusal:
        """The answer to a missing, unknown or revoked key."""

    @abstractmethod
    def refusal(self, call: Call, decision: Decision) -> Refusal:
        """The answer to a request the limiter turned away (fault, quota or bucket)."""

    @abstractmethod
    def abandoned(self) -> Refusal:
        """The answer to an admitted, unstreamed request hit by a ``stream_error`` fault."""

    @abstractmethod
    def released(self) -> Refusal:
        """The answer to a held request released because the server is shutting down."""

    def header_fn(self) -> HeaderFn | None:
        """The format's rate-limit headers (None: OpenAI's ``x-ratelimit-*``)."""
        return None

    # -- shared steps -------------------------------------------------------------------------

    async def authenticate(
        self, key: str | None, send: Send, headers: Headers, key_in_url: bool = False
    ) -> KeyState | None:
        """The key's state, counted as received; None once a refusal has been sent."""
        state = self._p.lookup(key)
        if state is None or state.config.invalid:
            stats = self._p.unknown_stats if state is None else state.stats
            stats.received += 1
            stats.status_401 += 1
            if key_in_url:
                stats.key_in_url += 1
            refusal = self.auth_refusal(key)
            await send_json(send, refusal.status, refusal.payload, [*refusal.headers, *headers])
            return None
        state.stats.received += 1
        if key_in_url:
            state.stats.key_in_url += 1
        return state

    def check_model(self, call: Call, model: str, method: str = "") -> None:
        call.model = model
        if model not in self.catalog() or not call.state.allows(model):
            raise self.model_not_found(model, method)

    async def guarded(self, call: Call, action: Awaitable[None]) -> None:
        """Run a request handler, answering validation errors and counting deliberate drops."""
        try:
            await action
        except ApiError as exc:
            call.state.stats.count_status(exc.status)
            headers = self._p.rate_headers(call.state, self.header_fn())
            await send_json(call.send, exc.status, exc.payload, [*headers, *call.headers])
        except SimulatedDisconnect:
            call.state.stats.dropped += 1
            raise

    async def admit(self, call: Call, tokens: int, limited: bool = True) -> Decision | None:
        """Admission; None once the refusal has been sent."""
        decision = self._p.decide(call.state, tokens, limited, self.header_fn())
        if decision.outcome is Outcome.ADMITTED:
            return decision
        await self.refuse(call, self.refusal(call, decision), decision.headers)
        return None

    async def refuse(self, call: Call, refusal: Refusal, rate_headers: Headers) -> None:
        status = refusal.status if refusal.counted_as is None else refusal.counted_as
        call.state.stats.count_status(status)
        headers = [*rate_headers, *refusal.headers, *call.headers]
        await send_json(call.send, refusal.status, refusal.payload, headers)

    async def wait_before_answer(self, call: Call, fault: Fault | None) -> bool:
        """Simulated latency, then any ``timeout`` hold; False if there is nobody to answer."""
        state = call.state
        delay = self._p.first_byte_delay_s(state)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is None or fault.mode is not FaultMode.TIMEOUT:
            return True
        state.stats.held += 1
        outcome = await self._p.holds.hold(fault.timeout_s, call.receive)
        if outcome is HoldOutcome.ELAPSED:
            return True
        if outcome is HoldOutcome.RELEASED:
            await self.refuse(call, self.released(), [])
        return False

    def chunk_delay_s(self, state: KeyState) -> float:
        return self._p.latency_config(state)[2] / 1000.0

    @staticmethod
    def cut_for(fault: Fault | None, error_event: bytes) -> Cut | None:
        """How a post-admission fault ends a stream (None: it does not)."""
        if fault is None:
            return None
        if fault.mode is FaultMode.DROP_STREAM:
            return Cut(fault.after_chunks)
        if fault.mode is FaultMode.STREAM_ERROR:
            return Cut(fault.after_chunks, error_event)
        return None

    @staticmethod
    def count_answer(
        state: KeyState, complete: bool, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Count a 200 that went out: served when whole, a stream error when ended by one."""
        stats = state.stats
        if not complete:
            stats.stream_errors += 1
            return
        stats.served += 1
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens


def is_stream_error(fault: Fault | None) -> bool:
    return fault is not None and fault.mode is FaultMode.STREAM_ERROR
