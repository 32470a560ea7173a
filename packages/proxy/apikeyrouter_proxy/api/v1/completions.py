"""``POST /v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` as lean ASGI.

Per request: check the client key, read the body once (size-limited), ``orjson`` parse,
validate the few fields routing needs (``intent_from_openai``), route, and answer with the
upstream's bytes as they came (after a translation, the body encoded by ``orjson``): no
pydantic request or response model, no dependency injection, no re-validation. Fields the
proxy does not understand travel untouched inside the body dict to the upstream.
"""

from __future__ import annotations

import orjson
from apikeyrouter import Endpoint, InvalidRequestError, RequestIntent
from apikeyrouter.utils.exceptions import ApiKeyRouterError, NoKeyAvailableError, UpstreamError
from apikeyrouter.utils.validation import intent_from_openai

from apikeyrouter_proxy.api.v1.streaming import stream_response
from apikeyrouter_proxy.asgi_types import Receive, Scope, Send
from apikeyrouter_proxy.middleware.auth import authenticate_client
from apikeyrouter_proxy.middleware.body_limit import read_body
from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.middleware.errors import MethodNotAllowed, NotReady, ProxyError
from apikeyrouter_proxy.middleware.responses import routing_headers, send_error, send_json
from apikeyrouter_proxy.observability.tracing import traced_route
from apikeyrouter_proxy.services.runtime import ProxyRuntime


def parse_body(body: bytes) -> object:
    """JSON, or a 400 that says where the JSON went wrong."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"request body is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno}, character {exc.pos})",
            param=None,
            code="invalid_json",
        ) from None


class CompletionEndpoint:
    """One OpenAI POST endpoint. Errors the caller caused, or that routing reports, become
    OpenAI-shaped responses here; anything else goes up to the gateway's safety net."""

    __slots__ = ("_endpoint", "_runtime")

    def __init__(self, runtime: ProxyRuntime, endpoint: Endpoint) -> None:
        self._runtime = runtime
        self._endpoint = endpoint

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        runtime = self._runtime
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(scope["method"], "POST")
            if not runtime.ready:
                raise NotReady("the proxy is starting or stopping")
            authenticate_client(runtime, ctx)
            body = await read_body(receive, runtime.max_body_bytes, ctx.content_length)
            intent = intent_from_openai(
                parse_body(body),
                self._endpoint,
                client_id=ctx.client_id,
                request_id=ctx.request_id,
            )
            if intent.stream:
                await stream_response(runtime, intent, ctx, receive, send)
                return
            await self._respond(intent, ctx, send)
        except (ApiKeyRouterError, ProxyError) as exc:
            if isinstance(exc, NoKeyAvailableError):
                ctx.attempts = exc.attempts
            elif isinstance(exc, UpstreamError):
                ctx.key_id, ctx.provider = exc.key_id, exc.provider_id
            if ctx.response_started:
                raise
            await send_error(send, ctx, exc)

    async def _respond(self, intent: RequestIntent, ctx: RequestContext, send: Send) -> None:
        runtime = self._runtime
        tracing = runtime.tracing
        if tracing is None:
            response = await runtime.service.router.route(intent)
        else:
            response = await traced_route(tracing, runtime.service.router, intent)
        attempts = response.attempts
        ctx.key_id = response.key_used
        ctx.provider = response.provider_id
        ctx.record_attempts(attempts)
        cost = ctx.cost_usd = response.cost_usd
        runtime.record_usage(
            response.key_used, response.provider_id, response.model, ctx.client_id, response.usage
        )
        # An OpenAI-format upstream's bytes go out as they came; a translated body is encoded.
        raw = response.raw_body
        await send_json(
            send,
            ctx,
            200,
            raw if raw is not None else orjson.dumps(response.body),
            routing_headers(response.key_used, response.provider_id, len(attempts), cost),
        )
