"""The Gemini front end under ``/v1beta``: ``models/{m}:generateContent``,
``:streamGenerateContent`` (SSE with ``?alt=sse``, else a streamed JSON array), ``:embedContent``,
``:batchEmbedContents``, ``:countTokens``, and ``GET models[/{m}]``.

The key goes in ``x-goog-api-key``; a ``?key=`` query parameter is accepted as Google accepts
it, but counted in ``key_in_url`` so a test can assert a router never puts a key in a URL. A bad
key is 400 ``API_KEY_INVALID``, a missing one 403; no answer carries rate-limit headers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from . import gemini_wire as wire
from .asgi import (
    JSON_HEADERS,
    SSE_HEADERS,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    find_header,
    read_body,
    send_json,
)
from .errors import ApiError
from .faults import Fault, FaultMode
from .flow import Call, FormatApi, Refusal, is_stream_error
from .gemini_parsing import (
    load_object,
    parse_batch_embed,
    parse_count_tokens,
    parse_embed,
    parse_generate,
)
from .limiter import Decision, HeaderFn, Outcome
from .native import build_native_reply
from .openai_wire import embedding_vector
from .streaming import Cut, send_maybe_truncated, send_stream

__all__ = ["GeminiApi"]

_PREFIX = "/v1beta/models"
_GENERATE, _STREAM = "generateContent", "streamGenerateContent"
_EMBED, _BATCH, _COUNT = "embedContent", "batchEmbedContents", "countTokens"
_POST_METHODS = frozenset({_GENERATE, _STREAM, _EMBED, _BATCH, _COUNT})
_LIST, _GET = "list", "get"
_DEFAULT_PAGE, _MAX_PAGE = 50, 1000


def _route(method: str, path: str) -> tuple[str, str] | None:
    """(operation, model) for a known route."""
    if path == _PREFIX:
        return (_LIST, "") if method == "GET" else None
    if not path.startswith(_PREFIX + "/"):
        return None
    name = path[len(_PREFIX) + 1 :]
    model, colon, operation = name.rpartition(":")
    if not colon:
        return (_GET, name) if method == "GET" and name else None
    if method == "POST" and model and operation in _POST_METHODS:
        return operation, model
    return None


def _key(scope: Scope, query: dict[str, list[str]]) -> tuple[str | None, bool]:
    """The key (header first) and whether one was sent in the URL."""
    in_url = bool(query.get("key"))
    header = find_header(scope, b"x-goog-api-key")
    if header is not None and header.strip():
        return header.decode("latin-1").strip(), in_url
    return (query["key"][0] if in_url else None), in_url


class GeminiApi(FormatApi):
    """Everything under ``/v1beta/``."""

    async def __call__(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope["method"], path)
        if route is None:
            message = f"The requested URL {path} was not found on this server."
            await send_json(send, 404, wire.error_body(404, "NOT_FOUND", message))
            return
        try:
            body = await read_body(receive)
        except ClientDisconnected:
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key, in_url = _key(scope, query)
        state = await self.authenticate(key, send, [], key_in_url=in_url)
        if state is None:
            return
        call = Call(state, receive, send, next(self._ids))
        await self.guarded(call, self._dispatch(route, query, body, call))

    async def _dispatch(
        self, route: tuple[str, str], query: dict[str, list[str]], body: bytes, call: Call
    ) -> None:
        operation, model = route
        if operation == _LIST:
            await self._list(query, call)
        elif operation == _GET:
            self.check_model(call, model, "get")
            await self._answer_unlimited(call, wire.model_object(model))
        elif operation in (_GENERATE, _STREAM):
            sse = query.get("alt", [""])[0] == "sse"
            await self._generate(model, body, call, operation == _STREAM, sse)
        elif operation == _COUNT:
            self.check_model(call, model, _COUNT)
            tokens = parse_count_tokens(load_object(body), model)
            await self._answer_unlimited(call, {"totalTokens": tokens})
        else:
            await self._embed(model, body, call, operation == _BATCH)

    # -- format specifics ---------------------------------------------------------------------

    def catalog(self) -> frozenset[str]:
        return self._p.gemini_model_set

    def model_not_found(self, model: str, method: str) -> ApiError:
        return ApiError(404, wire.model_not_found(model, method))

    def auth_refusal(self, key: str | None) -> Refusal:
        if key is None:
            return Refusal(403, wire.missing_key(), counted_as=401)
        return Refusal(400, wire.invalid_key(), counted_as=401)

    def header_fn(self) -> HeaderFn:
        return lambda state, now: []  # Gemini sends no rate-limit headers

    def refusal(self, call: Call, decision: Decision) -> Refusal:
        model = call.model
        if decision.outcome is Outcome.QUOTA:
            return Refusal(429, wire.quota_exhausted(model, call.state.config.quota or 0))
        if decision.outcome is Outcome.RATE_LIMITED:
            payload = wire.rate_limited(decision.limit_kind, model, decision.limit, decision.wait_s)
            return Refusal(429, payload)
        fault = decision.fault
        assert fault is not None
        if fault.mode is FaultMode.STATUS_429:
            limit = call.state.config.rpm or 0
            return Refusal(429, wire.rate_limited("requests", model, limit, fault.retry_after_s))
        if fault.mode is FaultMode.STATUS_401:
            return Refusal(400, wire.invalid_key(), counted_as=401)
        status = 500 if fault.mode is FaultMode.STATUS_500 else 503
        return Refusal(status, wire.server_error(status))

    def abandoned(self) -> Refusal:
        return Refusal(503, wire.server_error(503))

    def released(self) -> Refusal:
        message = "The simulated server is shutting down."
        return Refusal(503, wire.error_body(503, "UNAVAILABLE", message))

    # -- endpoints ----------------------------------------------------------------------------

    async def _generate(self, model: str, body: bytes, call: Call, stream: bool, sse: bool) -> None:
        state = call.state
        self.check_model(call, model, _STREAM if stream else _GENERATE)
        request = parse_generate(load_object(body), model, stream)
        reply = build_native_reply(request, self._p.completion_tokens)
        completion = reply.tokens * request.candidates
        decision = await self.admit(call, request.prompt_tokens + completion)
        if decision is None:
            return
        fault = decision.fault
        if not await self.wait_before_answer(call, fault):
            return
        if is_stream_error(fault) and not stream:
            await self.refuse(call, self.abandoned(), [])
            return
        args = (reply, request.candidates, request.prompt_tokens, model, f"sim{call.rid:010d}")
        if not stream:
            payload = orjson.dumps(wire.response(*args))
            await send_maybe_truncated(call.send, JSON_HEADERS, payload, _is_drop(fault))
            complete = True
        else:
            chunks = wire.stream_chunks(*args)
            delay = self.chunk_delay_s(state)
            if sse:
                events = [wire.sse(chunk) for chunk in chunks]
                cut = self.cut_for(fault, wire.sse(wire.server_error(503)))
                complete = await send_stream(call.send, SSE_HEADERS, events, delay, cut)
            else:
                events, cut = _json_array(chunks, fault)
                complete = await send_stream(call.send, JSON_HEADERS, events, delay, cut, b"]")
        self.count_answer(state, complete, request.prompt_tokens, completion)

    async def _embed(self, model: str, body: bytes, call: Call, batch: bool) -> None:
        self.check_model(call, model, _BATCH if batch else _EMBED)
        payload = load_object(body)
        request = parse_batch_embed(payload, model) if batch else parse_embed(payload, model)
        decision = await self.admit(call, request.prompt_tokens)
        if decision is None:
            return
        fault = decision.fault
        if not await self.wait_before_answer(call, fault):
            return
        if is_stream_error(fault):
            await self.refuse(call, self.abandoned(), [])
            return
        default = self._p.embedding_dimensions
        vectors = [
            {"values": embedding_vector(text, dimensions or default)}
            for text, dimensions in zip(request.texts, request.dimensions, strict=True)
        ]
        answer = {"embeddings": vectors} if batch else {"embedding": vectors[0]}
        await send_maybe_truncated(call.send, JSON_HEADERS, orjson.dumps(answer), _is_drop(fault))
        self.count_answer(call.state, True, request.prompt_tokens, 0)

    async def _list(self, query: dict[str, list[str]], call: Call) -> None:
        models = [m for m in self._p.gemini_models if call.state.allows(m)]
        raw_size = query.get("pageSize", [str(_DEFAULT_PAGE)])[0]
        if not raw_size.isdigit():
            raise wire.invalid_argument("page_size must be a non-negative integer")
        size = min(int(raw_size) or _DEFAULT_PAGE, _MAX_PAGE)
        token = query.get("pageToken", [""])[0]
        start = 0
        if token:
            offset = token.removeprefix("page-")
            if not token.startswith("page-") or not offset.isdigit():
                raise wire.invalid_argument("Invalid page token.")
            start = int(offset)
        page: dict[str, Any] = {
            "models": [wire.model_object(m) for m in models[start : start + size]]
        }
        if start + size < len(models):
            page["nextPageToken"] = f"page-{start + size}"
        await self._answer_unlimited(call, page)

    async def _answer_unlimited(self, call: Call, payload: dict[str, Any]) -> None:
        """Answer a request the per-minute limits do not charge (status faults still apply)."""
        decision = await self.admit(call, 0, limited=False)
        if decision is None:
            return
        await send_json(call.send, 200, payload)
        call.state.stats.served += 1


def _is_drop(fault: Fault | None) -> bool:
    return fault is not None and fault.mode is FaultMode.DROP_STREAM


def _json_array(
    chunks: list[dict[str, Any]], fault: Fault | None
) -> tuple[list[bytes], Cut | None]:
    """Without ``alt=sse`` Gemini streams one JSON array, element by element."""
    encoded = [orjson.dumps(chunk) for chunk in chunks]
    events = [b"[" + encoded[0], *(b",\r\n" + e for e in encoded[1:])]
    if fault is None or fault.mode not in (FaultMode.DROP_STREAM, FaultMode.STREAM_ERROR):
        return events, None
    if fault.mode is FaultMode.DROP_STREAM:
        return events, Cut(fault.after_chunks)
    opener = b",\r\n" if min(fault.after_chunks, len(events)) else b"["
    error = opener + orjson.dumps(wire.server_error(503)) + b"]"
    return events, Cut(fault.after_chunks, error)
