"""The raw ASGI application: routing and the request flow of the ``/v1`` endpoints.

Flow of one ``/v1`` request: read the body, authenticate the bearer key (401), validate (400 /
404), decide admission under the provider lock (injected status fault, quota, buckets), wait
the simulated latency and any ``timeout`` hold, then answer (possibly cut short by
``drop_stream``). Each step counts into the key's statistics.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, TypeGuard

from . import openai_wire as wire
from .admin import AdminApi
from .asgi import (
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    SimulatedDisconnect,
    find_header,
    read_body,
    send_json,
)
from .faults import Fault, FaultMode
from .generation import build_reply, send_embeddings, send_generation
from .holds import HoldOutcome
from .limiter import Decision, KeyState, Outcome, retry_after_headers
from .parsing import GenerationRequest, load_json, parse_chat, parse_completion, parse_embeddings

if TYPE_CHECKING:
    from .provider import SimulatedProvider

__all__ = ["SimulatorApp"]

_CHAT, _COMPLETIONS, _EMBEDDINGS = "chat", "completions", "embeddings"
_POST_ENDPOINTS = {
    "/v1/chat/completions": _CHAT,
    "/v1/completions": _COMPLETIONS,
    "/v1/embeddings": _EMBEDDINGS,
}
_FAULT_STATUS = {
    FaultMode.STATUS_429: 429,
    FaultMode.STATUS_401: 401,
    FaultMode.STATUS_500: 500,
    FaultMode.STATUS_503: 503,
}


def _bearer(scope: Scope) -> str | None:
    value = find_header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip().decode("latin-1")


class SimulatorApp:
    """ASGI callable behind :class:`SimulatedProvider`."""

    def __init__(self, provider: SimulatedProvider) -> None:
        self._p = provider
        self._admin = AdminApi(provider)
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                await self._v1(path, scope, receive, send)
            elif path.startswith("/_sim/"):
                await self._admin(scope, receive, send)
            else:
                await _invalid_url(scope, send, 404)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._p.holds.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._p.release_holds()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _v1(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _POST_ENDPOINTS.get(path)
        is_models = endpoint is None and (path == "/v1/models" or path.startswith("/v1/models/"))
        if endpoint is None and not is_models:
            await _invalid_url(scope, send, 404)
            return
        if scope["method"] != ("GET" if is_models else "POST"):
            await _invalid_url(scope, send, 405)
            return
        try:
            body = await read_body(receive)
        except ClientDisconnected:
            return
        token = _bearer(scope)
        state = self._p.lookup(token)
        if state is None or state.config.invalid:
            stats = self._p.unknown_stats if state is None else state.stats
            stats.received += 1
            stats.status_401 += 1
            await send_json(send, 401, wire.invalid_api_key(token))
            return
        state.stats.received += 1
        request_id = next(self._ids)
        try:
            if is_models:
                await self._models(path, state, send)
            elif endpoint == _EMBEDDINGS:
                await self._embeddings(body, state, receive, send, request_id)
            else:
                await self._generate(body, state, receive, send, request_id, endpoint == _CHAT)
        except wire.ApiError as exc:
            state.stats.count_status(exc.status)
            await send_json(send, exc.status, exc.payload, self._p.rate_headers(state))
        except SimulatedDisconnect:
            state.stats.dropped += 1
            raise

    def _check_model(self, state: KeyState, model: str) -> None:
        allowed = state.config.models
        if model not in self._p.model_set or (allowed is not None and model not in allowed):
            raise wire.ApiError(404, wire.model_not_found(model))

    async def _models(self, path: str, state: KeyState, send: Send) -> None:
        decision = self._p.decide(state, 0, limited=False)
        if decision.outcome is not Outcome.ADMITTED:
            await self._refuse(state, decision, send)
            return
        created = 1_700_000_000
        allowed = state.config.models
        if path == "/v1/models":
            models = [m for m in self._p.models if allowed is None or m in allowed]
            await send_json(send, 200, wire.models_body(models, created), decision.headers)
        else:
            model = path[len("/v1/models/") :]
            self._check_model(state, model)
            await send_json(send, 200, wire.model_body(model, created), decision.headers)
        state.stats.served += 1

    async def _generate(
        self, body: bytes, state: KeyState, receive: Receive, send: Send, rid: int, chat: bool
    ) -> None:
        p = self._p
        request: GenerationRequest = (parse_chat if chat else parse_completion)(load_json(body))
        self._check_model(state, request.model)
        reserved = (request.max_tokens or p.completion_tokens) * len(request.sources)
        decision = p.decide(state, request.prompt_tokens + reserved)
        if decision.outcome is not Outcome.ADMITTED:
            await self._refuse(state, decision, send)
            return
        fault = decision.fault
        if not await self._wait_before_answer(state, fault, receive, send):
            return
        reply = build_reply(request, chat, p.completion_tokens)
        drop_after = fault.after_chunks if _is_drop(fault) else None
        headers = [*decision.headers, (b"x-request-id", b"req_sim_%d" % rid)]
        id_ = f"{'chatcmpl' if chat else 'cmpl'}-sim{rid:010d}"
        chunk_delay_s = p.latency_config(state)[2] / 1000.0
        await send_generation(send, headers, id_, request, reply, chat, chunk_delay_s, drop_after)
        stats = state.stats
        stats.served += 1
        stats.prompt_tokens += request.prompt_tokens
        stats.completion_tokens += reply.completion_tokens

    async def _embeddings(
        self, body: bytes, state: KeyState, receive: Receive, send: Send, rid: int
    ) -> None:
        p = self._p
        request = parse_embeddings(load_json(body))
        self._check_model(state, request.model)
        decision = p.decide(state, request.prompt_tokens)
        if decision.outcome is not Outcome.ADMITTED:
            await self._refuse(state, decision, send)
            return
        if not await self._wait_before_answer(state, decision.fault, receive, send):
            return
        dimensions = request.dimensions or p.embedding_dimensions
        headers = [*decision.headers, (b"x-request-id", b"req_sim_%d" % rid)]
        await send_embeddings(send, headers, request, dimensions, _is_drop(decision.fault))
        state.stats.served += 1
        state.stats.prompt_tokens += request.prompt_tokens

    async def _wait_before_answer(
        self, state: KeyState, fault: Fault | None, receive: Receive, send: Send
    ) -> bool:
        """Simulated latency, then any ``timeout`` hold; False if there is nobody to answer."""
        delay = self._p.first_byte_delay_s(state)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is None or fault.mode is not FaultMode.TIMEOUT:
            return True
        state.stats.held += 1
        outcome = await self._p.holds.hold(fault.timeout_s, receive)
        if outcome is HoldOutcome.ELAPSED:
            return True
        if outcome is HoldOutcome.RELEASED:
            state.stats.status_5xx += 1
            body = wire.error_body("The simulated server is shutting down.", "server_error")
            await send_json(send, 503, body)
        return False

    async def _refuse(self, state: KeyState, decision: Decision, send: Send) -> None:
        status, payload, extra = self._refusal(state, decision)
        state.stats.count_status(status)
        await send_json(send, status, payload, [*decision.headers, *extra])

    def _refusal(
        self, state: KeyState, decision: Decision
    ) -> tuple[int, dict[str, object], Headers]:
        if decision.outcome is Outcome.QUOTA:
            return 429, wire.insufficient_quota(), []
        if decision.outcome is Outcome.RATE_LIMITED:
            payload = wire.rate_limited(
                decision.limit_kind,
                decision.limit,
                decision.used,
                decision.requested,
                decision.wait_s,
            )
            return 429, payload, retry_after_headers(decision.wait_s)
        fault = decision.fault
        assert fault is not None
        status = _FAULT_STATUS[fault.mode]
        if status == 429:
            message = (
                "Rate limit reached for requests (injected by the simulator). "
                f"Please try again in {fault.retry_after_s:g}s."
            )
            payload = wire.error_body(message, "requests", "rate_limit_exceeded")
            extra = retry_after_headers(fault.retry_after_s) if fault.retry_after_s > 0 else []
            return 429, payload, extra
        if status == 401:
            return 401, wire.invalid_api_key(state.config.key), []
        return status, wire.server_error(status), []


def _is_drop(fault: Fault | None) -> TypeGuard[Fault]:
    return fault is not None and fault.mode is FaultMode.DROP_STREAM


async def _invalid_url(scope: Scope, send: Send, status: int) -> None:
    message = f"Invalid URL ({scope['method']} {scope['path']})"
    if status == 405:
        message = f"Method {scope['method']} not allowed for {scope['path']}"
    await send_json(send, status, wire.error_body(message, "invalid_request_error"))
