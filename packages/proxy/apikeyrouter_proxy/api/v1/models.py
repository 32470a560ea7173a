"""``GET /v1/models`` and ``GET /v1/models/{model}``: what the proxy can serve, OpenAI-shaped."""

from __future__ import annotations

import orjson
from apikeyrouter.utils.exceptions import ApiKeyRouterError, ModelNotFoundError

from apikeyrouter_proxy.asgi_types import Receive, Scope, Send
from apikeyrouter_proxy.middleware.auth import authenticate_client
from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.middleware.errors import MethodNotAllowed, NotReady, ProxyError
from apikeyrouter_proxy.middleware.responses import send_error, send_json
from apikeyrouter_proxy.services.runtime import ProxyRuntime

MODELS_PATH = "/v1/models"
MODEL_PREFIX = "/v1/models/"


class ModelsEndpoint:
    """Both the list and the single-model lookup; the gateway sends ``/v1/models/*`` here."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: ProxyRuntime) -> None:
        self._runtime = runtime

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        runtime = self._runtime
        try:
            if scope["method"] != "GET":
                raise MethodNotAllowed(scope["method"], "GET")
            if not runtime.ready:
                raise NotReady("the proxy is starting or stopping")
            authenticate_client(runtime, ctx)
            body, owners = await runtime.catalog.payload()
            if ctx.path == MODELS_PATH:
                await send_json(send, ctx, 200, body)
                return
            model = ctx.path[len(MODEL_PREFIX) :]
            owner = owners.get(model)
            if owner is None:
                raise ModelNotFoundError(
                    f"the model {model!r} is not served by this proxy", param="model"
                )
            entry = {"id": model, "object": "model", "created": 0, "owned_by": owner}
            await send_json(send, ctx, 200, orjson.dumps(entry))
        except (ApiKeyRouterError, ProxyError) as exc:
            await send_error(send, ctx, exc)
