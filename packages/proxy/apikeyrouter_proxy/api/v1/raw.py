"""``POST /v1/raw/{model}``: any JSON API whose keys the router pools (``Endpoint.RAW``).

For providers that are not LLMs (``kind: generic`` in raw mode: geocoding, search, speech...):
the JSON body goes upstream as it is (the generic adapter drops only ``model``, ``stream`` and
``stream_options`` unless configured otherwise) and the upstream's answer comes back as JSON
(a JSON object as it is; other JSON as ``{"data": ...}``; text as ``{"text": ...}``). The model
comes from the path, so the body never needs a routing field. Lean ASGI like the other ``/v1``
routes: same client auth, body limit, failover, headers, metrics and access log.

``"stream": true`` in the body (a provider with ``stream: sse``) answers with server-sent
events: one ``data:`` event per upstream event (its JSON payload, wrapped like a whole answer
when it is not an object), then ``data: [DONE]``, exactly as the chat route streams.
"""

from __future__ import annotations

from apikeyrouter import Endpoint, InvalidRequestError, RequestIntent
from apikeyrouter.utils.exceptions import ApiKeyRouterError, NoKeyAvailableError, UpstreamError

from apikeyrouter_proxy.api.v1.completions import CompletionEndpoint, parse_body
from apikeyrouter_proxy.api.v1.streaming import stream_response
from apikeyrouter_proxy.asgi_types import Receive, Scope, Send
from apikeyrouter_proxy.middleware.auth import authenticate_client
from apikeyrouter_proxy.middleware.body_limit import read_body
from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.middleware.errors import MethodNotAllowed, NotReady, ProxyError
from apikeyrouter_proxy.middleware.responses import send_error
from apikeyrouter_proxy.services.runtime import ProxyRuntime

RAW_PREFIX = "/v1/raw/"
RAW_ROUTE = RAW_PREFIX + "{model}"


def raw_intent(body: bytes, model: str, ctx: RequestContext) -> RequestIntent:
    """The body as is (an empty body is ``{}``); only its being a JSON object is checked."""
    data = parse_body(body) if body.strip() else {}
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", param=None)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be a boolean", param="stream")
    # All fields given: model_construct would otherwise run default factories per request.
    return RequestIntent.model_construct(
        endpoint=Endpoint.RAW,
        model=model,
        body=data,
        stream=stream,
        max_tokens=None,
        client_id=ctx.client_id,
        request_id=ctx.request_id,
        objective=None,
        timeout_seconds=None,
        metadata={},
    )


class RawEndpoint(CompletionEndpoint):
    """Shares the completion endpoint's response path (headers, cost, usage ledger)."""

    __slots__ = ()

    def __init__(self, runtime: ProxyRuntime) -> None:
        super().__init__(runtime, Endpoint.RAW)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        runtime = self._runtime
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(scope["method"], "POST")
            if not runtime.ready:
                raise NotReady("the proxy is starting or stopping")
            model = ctx.path[len(RAW_PREFIX) :]
            authenticate_client(runtime, ctx)
            body = await read_body(receive, runtime.max_body_bytes, ctx.content_length)
            intent = raw_intent(body, model, ctx)
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
