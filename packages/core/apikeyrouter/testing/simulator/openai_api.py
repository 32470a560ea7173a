"""The OpenAI front end: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` and
``/v1/models`` with ``Authorization: Bearer`` keys and ``x-ratelimit-*`` headers."""

from __future__ import annotations

from . import openai_wire as wire
from .asgi import ClientDisconnected, Receive, Scope, Send, find_header, read_body, send_json
from .errors import ApiError
from .faults import FaultMode
from .flow import Call, FormatApi, Refusal, is_stream_error
from .generation import build_reply, send_embeddings, send_generation
from .limiter import Decision, Outcome, retry_after_headers
from .parsing import GenerationRequest, load_json, parse_chat, parse_completion, parse_embeddings

__all__ = ["OPENAI_POST_PATHS", "OpenAIApi", "invalid_url"]

_CHAT, _COMPLETIONS, _EMBEDDINGS = "chat", "completions", "embeddings"
_POST_ENDPOINTS = {
    "/v1/chat/completions": _CHAT,
    "/v1/completions": _COMPLETIONS,
    "/v1/embeddings": _EMBEDDINGS,
}
OPENAI_POST_PATHS = frozenset(_POST_ENDPOINTS)
_FAULT_STATUS = {
    FaultMode.STATUS_429: 429,
    FaultMode.STATUS_401: 401,
    FaultMode.STATUS_500: 500,
    FaultMode.STATUS_503: 503,
}
_CREATED = 1_700_000_000


def _bearer(scope: Scope) -> str | None:
    value = find_header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip().decode("latin-1")


class OpenAIApi(FormatApi):
    """Every ``/v1`` request that is not Anthropic's."""

    async def __call__(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _POST_ENDPOINTS.get(path)
        is_models = endpoint is None and (path == "/v1/models" or path.startswith("/v1/models/"))
        if endpoint is None and not is_models:
            await invalid_url(scope, send, 404)
            return
        if scope["method"] != ("GET" if is_models else "POST"):
            await invalid_url(scope, send, 405)
            return
        try:
            body = await read_body(receive)
        except ClientDisconnected:
            return
        state = await self.authenticate(_bearer(scope), send, [])
        if state is None:
            return
        call = Call(state, receive, send, next(self._ids))
        if is_models:
            action = self._models(path, call)
        elif endpoint == _EMBEDDINGS:
            action = self._embeddings(body, call)
        else:
            action = self._generate(body, call, endpoint == _CHAT)
        await self.guarded(call, action)

    # -- format specifics ---------------------------------------------------------------------

    def catalog(self) -> frozenset[str]:
        return self._p.model_set

    def model_not_found(self, model: str, method: str) -> ApiError:
        return ApiError(404, wire.model_not_found(model))

    def auth_refusal(self, key: str | None) -> Refusal:
        return Refusal(401, wire.invalid_api_key(key))

    def refusal(self, call: Call, decision: Decision) -> Refusal:
        if decision.outcome is Outcome.QUOTA:
            return Refusal(429, wire.insufficient_quota())
        if decision.outcome is Outcome.RATE_LIMITED:
            payload = wire.rate_limited(
                decision.limit_kind,
                decision.limit,
                decision.used,
                decision.requested,
                decision.wait_s,
            )
            return Refusal(429, payload, retry_after_headers(decision.wait_s))
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
            return Refusal(429, payload, extra)
        if status == 401:
            return Refusal(401, wire.invalid_api_key(call.state.config.key))
        return Refusal(status, wire.server_error(status))

    def abandoned(self) -> Refusal:
        return Refusal(500, wire.server_error(500))

    def released(self) -> Refusal:
        return Refusal(
            503, wire.error_body("The simulated server is shutting down.", "server_error")
        )

    # -- endpoints ----------------------------------------------------------------------------

    async def _models(self, path: str, call: Call) -> None:
        decision = await self.admit(call, 0, limited=False)
        if decision is None:
            return
        state = call.state
        if path == "/v1/models":
            models = [m for m in self._p.models if state.allows(m)]
            await send_json(call.send, 200, wire.models_body(models, _CREATED), decision.headers)
        else:
            model = path[len("/v1/models/") :]
            self.check_model(call, model)
            await send_json(call.send, 200, wire.model_body(model, _CREATED), decision.headers)
        state.stats.served += 1

    async def _generate(self, body: bytes, call: Call, chat: bool) -> None:
        p = self._p
        request: GenerationRequest = (parse_chat if chat else parse_completion)(load_json(body))
        self.check_model(call, request.model)
        reserved = (request.max_tokens or p.completion_tokens) * len(request.sources)
        decision = await self.admit(call, request.prompt_tokens + reserved)
        if decision is None:
            return
        fault = decision.fault
        if not await self.wait_before_answer(call, fault):
            return
        if is_stream_error(fault) and not request.stream:
            await self.refuse(call, self.abandoned(), decision.headers)
            return
        reply = build_reply(request, chat, p.completion_tokens)
        headers = [*decision.headers, (b"x-request-id", b"req_sim_%d" % call.rid)]
        id_ = f"{'chatcmpl' if chat else 'cmpl'}-sim{call.rid:010d}"
        cut = self.cut_for(fault, wire.sse_error())
        complete = await send_generation(
            call.send, headers, id_, request, reply, chat, self.chunk_delay_s(call.state), cut
        )
        self.count_answer(call.state, complete, request.prompt_tokens, reply.completion_tokens)

    async def _embeddings(self, body: bytes, call: Call) -> None:
        p = self._p
        request = parse_embeddings(load_json(body))
        self.check_model(call, request.model)
        decision = await self.admit(call, request.prompt_tokens)
        if decision is None:
            return
        fault = decision.fault
        if not await self.wait_before_answer(call, fault):
            return
        if is_stream_error(fault):
            await self.refuse(call, self.abandoned(), decision.headers)
            return
        dimensions = request.dimensions or p.embedding_dimensions
        headers = [*decision.headers, (b"x-request-id", b"req_sim_%d" % call.rid)]
        drop = fault is not None and fault.mode is FaultMode.DROP_STREAM
        await send_embeddings(call.send, headers, request, dimensions, drop)
        self.count_answer(call.state, True, request.prompt_tokens, 0)


async def invalid_url(scope: Scope, send: Send, status: int) -> None:
    message = f"Invalid URL ({scope['method']} {scope['path']})"
    if status == 405:
        message = f"Method {scope['method']} not allowed for {scope['path']}"
    await send_json(send, status, wire.error_body(message, "invalid_request_error"))
