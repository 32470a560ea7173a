"""The HTTP entry point: request context, hot-path dispatch, safety net, access log, metrics.

``/v1`` requests go straight from here to their handler (one dict lookup), skipping Starlette's
middleware stack and router and FastAPI's per-request machinery: on a proxy whose whole job is
a fast pass-through that machinery would cost more than the routing itself. Everything else
(management API, docs, health, metrics) goes to the FastAPI app with the same request id,
body limit, error safety net, log line and metrics.

The safety net: an exception that escapes a handler is logged (redacted, with the request id)
and, if no response has started, answered with a generic OpenAI-shaped 500. Nothing escapes to
the server, so no traceback is ever written to a client.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from apikeyrouter_proxy.asgi_types import ASGIApp, HotHandler, Message, Receive, Scope, Send
from apikeyrouter_proxy.middleware.body_limit import limited_receive
from apikeyrouter_proxy.middleware.context import SCOPE_KEY, RequestContext
from apikeyrouter_proxy.middleware.error_handler import is_expected, log_unexpected
from apikeyrouter_proxy.middleware.errors import BodyTooLarge, ClientDisconnected
from apikeyrouter_proxy.middleware.responses import send_error

if TYPE_CHECKING:
    from apikeyrouter_proxy.services.runtime import ProxyRuntime

#: Route label for requests that matched nothing (bounded metric cardinality).
UNMATCHED = "unmatched"


class Gateway:
    def __init__(
        self,
        runtime: ProxyRuntime,
        app: ASGIApp,
        hot: Mapping[str, HotHandler],
        prefixed: tuple[tuple[str, str, HotHandler], ...] = (),
    ) -> None:
        self._runtime = runtime
        self._app = app
        self._hot = dict(hot)
        #: (path prefix, route label, handler) for hot routes with a path parameter.
        self._prefixed = prefixed

    def _match(self, path: str) -> tuple[str, HotHandler] | None:
        handler = self._hot.get(path)
        if handler is not None:
            return path, handler
        for prefix, label, prefixed in self._prefixed:
            if path.startswith(prefix) and len(path) > len(prefix):
                return label, prefixed
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        root_path = scope.get("root_path")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :] or "/"
        ctx = RequestContext(scope, path)
        match = self._match(path)
        try:
            if match is not None:
                ctx.route = match[0]
                await match[1](scope, receive, send, ctx)
            else:
                await self._to_app(scope, receive, send, ctx)
        except ClientDisconnected:
            ctx.status = ctx.status or 499
        except Exception as exc:
            await self._fail(exc, ctx, send)
        finally:
            seconds = time.perf_counter() - ctx.started
            runtime = self._runtime
            runtime.metrics.observe(ctx, seconds)
            runtime.access_log.write(ctx, seconds)

    async def _to_app(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        limit = self._runtime.max_body_bytes
        if ctx.content_length is not None and ctx.content_length > limit:
            ctx.route = UNMATCHED
            raise BodyTooLarge(limit)
        scope[SCOPE_KEY] = ctx
        request_id = ctx.request_id.encode()
        hijacked = False

        async def observing_send(message: Message) -> None:
            if hijacked:
                return  # the proxy already answered (body too large); drop the app's reply
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                ctx.response_started = True
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-request-id", request_id)],
                }
            await send(message)

        async def too_large() -> None:
            nonlocal hijacked
            if not ctx.response_started:
                await self._fail(BodyTooLarge(limit), ctx, send)
            hijacked = True

        try:
            await self._app(scope, limited_receive(receive, limit, too_large), observing_send)
        finally:
            route = scope.get("route")
            ctx.route = getattr(route, "path", None) or UNMATCHED

    async def _fail(self, exc: Exception, ctx: RequestContext, send: Send) -> None:
        if not is_expected(exc):
            log_unexpected(exc, ctx.request_id, ctx.path)
        if ctx.response_started:
            return
        await send_error(send, ctx, exc)
