"""The Anthropic front end: ``POST /v1/messages`` (plain and streamed), ``POST
/v1/messages/count_tokens`` and ``GET /v1/models[/{id}]`` with ``x-api-key`` keys, a required
``anthropic-version`` header, ``anthropic-ratelimit-*`` headers and a ``request-id`` on every
answer. Status faults map onto Anthropic's statuses: 503 becomes 529 ``overloaded_error``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from . import anthropic_wire as wire
from .anthropic_parsing import load_object, parse_count_tokens, parse_messages
from .asgi import (
    JSON_HEADERS,
    SSE_HEADERS,
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    find_header,
    read_body,
    send_json,
)
from .errors import ApiError
from .faults import FaultMode
from .flow import Call, FormatApi, Refusal, is_stream_error
from .limiter import Decision, HeaderFn, Outcome
from .native import build_native_reply
from .streaming import send_maybe_truncated, send_stream

__all__ = ["AnthropicApi"]

_ROUTES = {
    "/v1/messages": ("POST", "messages"),
    "/v1/messages/count_tokens": ("POST", "count_tokens"),
    "/v1/models": ("GET", "models"),
}
_MODEL_PREFIX = "/v1/models/"
_OVERLOADED = "Overloaded"


def _route(path: str) -> tuple[str, str] | None:
    if path in _ROUTES:
        return _ROUTES[path]
    if path.startswith(_MODEL_PREFIX) and len(path) > len(_MODEL_PREFIX):
        return "GET", "model"
    return None


class AnthropicApi(FormatApi):
    """``/v1/messages*`` and every ``/v1`` request that sends ``x-api-key``."""

    async def __call__(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        rid = next(self._ids)
        headers: Headers = [(b"request-id", b"req_sim%017d" % rid)]
        route = _route(path)
        if route is None or route[0] != scope["method"]:
            status, type_, message = (
                (404, "not_found_error", "Not found")
                if route is None
                else (405, "invalid_request_error", "Method not allowed")
            )
            await send_json(send, status, wire.error_body(type_, message), headers)
            return
        try:
            body = await read_body(receive)
        except ClientDisconnected:
            return
        raw_key = find_header(scope, b"x-api-key")
        key = raw_key.decode("latin-1").strip() if raw_key else None
        state = await self.authenticate(key or None, send, headers)
        if state is None:
            return
        call = Call(state, receive, send, rid, headers)
        await self.guarded(call, self._dispatch(route[1], path, scope, body, call))

    async def _dispatch(self, route: str, path: str, scope: Scope, body: bytes, call: Call) -> None:
        _check_version(scope)
        if route == "messages":
            await self._messages(body, call)
        elif route == "count_tokens":
            await self._count_tokens(body, call)
        elif route == "models":
            await self._models(scope, call)
        else:
            await self._model(path[len(_MODEL_PREFIX) :], call)

    # -- format specifics ---------------------------------------------------------------------

    def catalog(self) -> frozenset[str]:
        return self._p.anthropic_model_set

    def model_not_found(self, model: str, method: str) -> ApiError:
        return ApiError(404, wire.error_body("not_found_error", f"model: {model}"))

    def auth_refusal(self, key: str | None) -> Refusal:
        message = "x-api-key header is required" if key is None else "invalid x-api-key"
        return Refusal(401, wire.error_body("authentication_error", message))

    def header_fn(self) -> HeaderFn:
        # Reset times are absolute: anchor the bucket's monotonic clock to the epoch now.
        wall = self._p.wall_clock()
        return lambda state, now: wire.rate_headers(state, now, wall)

    def refusal(self, call: Call, decision: Decision) -> Refusal:
        if decision.outcome is Outcome.QUOTA:
            return Refusal(400, wire.error_body("invalid_request_error", wire.CREDIT_MESSAGE))
        if decision.outcome is Outcome.RATE_LIMITED:
            message = wire.rate_limited_message(
                decision.limit_kind, decision.limit, decision.requested, decision.wait_s
            )
            body = wire.error_body("rate_limit_error", message)
            return Refusal(429, body, wire.retry_after(decision.wait_s))
        fault = decision.fault
        assert fault is not None
        if fault.mode is FaultMode.STATUS_429:
            message = "Number of requests has exceeded your rate limit (injected by the simulator)."
            body = wire.error_body("rate_limit_error", message)
            return Refusal(429, body, wire.retry_after(fault.retry_after_s))
        if fault.mode is FaultMode.STATUS_401:
            return self.auth_refusal(call.state.config.key)
        if fault.mode is FaultMode.STATUS_500:
            return Refusal(500, wire.error_body("api_error", "Internal server error"))
        return Refusal(529, wire.error_body("overloaded_error", _OVERLOADED))

    def abandoned(self) -> Refusal:
        return Refusal(529, wire.error_body("overloaded_error", _OVERLOADED))

    def released(self) -> Refusal:
        message = "The simulated server is shutting down."
        return Refusal(529, wire.error_body("overloaded_error", message))

    # -- endpoints ----------------------------------------------------------------------------

    async def _messages(self, body: bytes, call: Call) -> None:
        state = call.state
        request = parse_messages(load_object(body))
        self.check_model(call, request.model)
        reply = build_native_reply(request, self._p.completion_tokens)
        decision = await self.admit(call, request.prompt_tokens + reply.tokens)
        if decision is None:
            return
        fault = decision.fault
        if not await self.wait_before_answer(call, fault):
            return
        if is_stream_error(fault) and not request.stream:
            await self.refuse(call, self.abandoned(), decision.headers)
            return
        id_, tool_id = f"msg_sim{call.rid:017d}", f"toolu_sim{call.rid:015d}"
        headers = [*decision.headers, *call.headers]
        args = (id_, request.model, reply, request.prompt_tokens, tool_id)
        if request.stream:
            cut = self.cut_for(fault, wire.error_event("overloaded_error", _OVERLOADED))
            events = wire.stream_events(*args)
            delay = self.chunk_delay_s(state)
            complete = await send_stream(call.send, [*SSE_HEADERS, *headers], events, delay, cut)
        else:
            payload = orjson.dumps(wire.message_body(*args))
            truncate = fault is not None and fault.mode is FaultMode.DROP_STREAM
            await send_maybe_truncated(call.send, [*JSON_HEADERS, *headers], payload, truncate)
            complete = True
        self.count_answer(state, complete, request.prompt_tokens, reply.tokens)

    async def _count_tokens(self, body: bytes, call: Call) -> None:
        model, tokens = parse_count_tokens(load_object(body))
        self.check_model(call, model)
        await self._answer_unlimited(call, {"input_tokens": tokens})

    async def _models(self, scope: Scope, call: Call) -> None:
        models = [m for m in self._p.anthropic_models if call.state.allows(m)]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        page = _page(models, query)
        positions = {m: i for i, m in enumerate(self._p.anthropic_models)}
        data = [wire.model_object(m, positions[m]) for m in page.models]
        payload = {
            "data": data,
            "has_more": page.has_more,
            "first_id": page.models[0] if page.models else None,
            "last_id": page.models[-1] if page.models else None,
        }
        await self._answer_unlimited(call, payload)

    async def _model(self, model: str, call: Call) -> None:
        self.check_model(call, model)
        position = self._p.anthropic_models.index(model)
        await self._answer_unlimited(call, wire.model_object(model, position))

    async def _answer_unlimited(self, call: Call, payload: dict[str, Any]) -> None:
        """Answer a request the per-minute limits do not charge (status faults still apply)."""
        decision = await self.admit(call, 0, limited=False)
        if decision is None:
            return
        await send_json(call.send, 200, payload, [*decision.headers, *call.headers])
        call.state.stats.served += 1


def _check_version(scope: Scope) -> None:
    version = find_header(scope, b"anthropic-version")
    if version is None:
        raise wire.invalid_request("anthropic-version: header is required")
    text = version.decode("latin-1").strip()
    if text not in wire.API_VERSIONS:
        raise wire.invalid_request(f"anthropic-version: {text!r} is not a supported API version")


class _Page:
    __slots__ = ("has_more", "models")

    def __init__(self, models: list[str], has_more: bool) -> None:
        self.models = models
        self.has_more = has_more


def _page(models: list[str], query: dict[str, list[str]]) -> _Page:
    """Anthropic's cursor pagination: ``limit`` (1-1000, default 20), ``after_id``/``before_id``."""
    raw_limit = query.get("limit", ["20"])[0]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise wire.invalid_request("limit: Input should be between 1 and 1000")
    limit = int(raw_limit)
    after, before = query.get("after_id", [None])[0], query.get("before_id", [None])[0]
    for cursor in (after, before):
        if cursor is not None and cursor not in models:
            raise wire.invalid_request(f"no model with id {cursor!r} to page from")
    if after is not None:
        start = models.index(after) + 1
        return _Page(models[start : start + limit], start + limit < len(models))
    if before is not None:
        end = models.index(before)
        return _Page(models[max(0, end - limit) : end], end - limit > 0)
    return _Page(models[:limit], limit < len(models))
