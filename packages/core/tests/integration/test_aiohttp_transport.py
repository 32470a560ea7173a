"""The default transport against a real local HTTP server: answers, timeouts, broken peers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from apikeyrouter.infrastructure.transport.aiohttp_transport import AiohttpTransport
from apikeyrouter.infrastructure.transport.base import TransportError, TransportTimeout


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """``/echo`` answers with what it got; ``/stall`` answers only once ``release`` is set."""
    release = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=body,
            status=201,
            headers={"X-RateLimit-Remaining-Requests": "7", "Content-Type": "application/json"},
        )

    async def stall(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"{}")

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/stall", stall)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", release
    finally:
        release.set()
        await runner.cleanup()


async def test_a_response_comes_back_with_lower_cased_headers(
    server: tuple[str, asyncio.Event],
) -> None:
    base, _ = server
    transport = AiohttpTransport()
    try:
        response = await transport.request(
            "POST", base + "/echo", {"Content-Type": "application/json"}, b'{"a":1}', 5.0
        )
    finally:
        await transport.close()
    assert (response.status, response.body) == (201, b'{"a":1}')
    assert response.headers["x-ratelimit-remaining-requests"] == "7"


async def test_an_upstream_that_never_answers_times_out_at_the_given_bound(
    server: tuple[str, asyncio.Event],
) -> None:
    base, _ = server
    transport = AiohttpTransport()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(TransportTimeout, match=r"no response within 0\.2s"):
            await transport.request("POST", base + "/stall", {}, b"{}", 0.2)
    finally:
        await transport.close()
    assert 0.2 <= loop.time() - started < 5.0


async def test_a_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        transport = AiohttpTransport()
        try:
            with pytest.raises(TransportError, match="upstream connection failed"):
                await transport.request("POST", f"http://127.0.0.1:{port}/x", {}, b"{}", 5.0)
        finally:
            await transport.close()
