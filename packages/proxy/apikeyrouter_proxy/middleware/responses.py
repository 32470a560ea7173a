"""Raw ASGI responses for the hot path: a JSON body or an error, with the proxy's headers.

Two ``send`` calls and a header list built by hand: no Response object, no header
normalisation. Every response carries ``x-request-id``; routed ones also say which key and
provider served them and in how many attempts (ids only, never secrets).
"""

from __future__ import annotations

from apikeyrouter.utils.bounded_cache import remember
from apikeyrouter_proxy.asgi_types import Headers, Send
from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.middleware.error_handler import render_error

JSON_TYPE = (b"content-type", b"application/json")
KEY_HEADER = b"x-apikeyrouter-key-id"
PROVIDER_HEADER = b"x-apikeyrouter-provider"
ATTEMPTS_HEADER = b"x-apikeyrouter-attempts"
COST_HEADER = b"x-apikeyrouter-cost-usd"
#: Bound on the encoded-value cache (keys come and go over a long run).
_ENCODED_LIMIT = 4096


#: Header values that repeat from request to request (key and provider ids, attempt counts),
#: encoded once.
_encoded: dict[str | int, bytes] = {}


def _header_value(value: str | int) -> bytes:
    encoded = _encoded.get(value)
    if encoded is None:
        encoded = remember(_encoded, value, str(value).encode(), _ENCODED_LIMIT)
    return encoded


def routing_headers(
    key_id: str, provider_id: str, attempts: int, cost_usd: float | None = None
) -> Headers:
    headers = [
        (KEY_HEADER, _header_value(key_id)),
        (PROVIDER_HEADER, _header_value(provider_id)),
        (ATTEMPTS_HEADER, _header_value(attempts)),
    ]
    if cost_usd is not None:
        # The router's estimate from its price table; 8 significant digits is sub-cent precise.
        headers.append((COST_HEADER, f"{cost_usd:.8g}".encode()))
    return headers


async def send_json(
    send: Send, ctx: RequestContext, status: int, body: bytes, extra: Headers | None = None
) -> None:
    headers = [
        JSON_TYPE,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", ctx.request_id.encode()),
    ]
    if extra:
        headers.extend(extra)
    ctx.status = status
    ctx.response_started = True
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, ctx: RequestContext, exc: BaseException) -> None:
    status, body, headers = render_error(exc, ctx.request_id)
    if ctx.attempts and not any(name == ATTEMPTS_HEADER for name, _ in headers):
        headers.append((ATTEMPTS_HEADER, str(ctx.attempts).encode()))
    await send_json(send, ctx, status, body, headers)
