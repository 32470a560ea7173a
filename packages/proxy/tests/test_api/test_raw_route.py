"""``POST /v1/raw/{model}``: a non-LLM API (``kind: generic``) behind the proxy.

The upstream is a tiny geocoding API in process that takes its key in an ``x-api-key`` header;
one of the two keys is invalid. Requests to ``geo.test`` go to it, everything else to the
simulated LLM provider.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from apikeyrouter import KeyState
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.infrastructure.transport.base import (
    HttpResponse,
    HttpStreamResponse,
    HttpTransport,
)
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter_proxy.config import ProxyConfig

from .conftest import KEY_A
from .support import ADMIN, ADMIN_TOKEN, SIM_BASE, chat_body, running_proxy, sse_events

GOOD = "geo-key-good-Tq7Wm2Lp9Xs4"
BAD = "geo-key-bad-Hv3Nk8Rb5Jd1"
Message = MutableMapping[str, Any]


class GeoApi:
    """``POST /v1/geocode`` with ``{"q": ...}``; 401 for an unknown key, 400 without ``q``.
    Asked for ``text/event-stream``, it answers with three candidate events."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        data = orjson.loads(body) if body else None
        answer: dict[str, Any]
        if headers.get(b"x-api-key") != GOOD.encode():
            status, answer = 401, {"error": {"message": "bad key"}}
        elif scope["path"] != "/v1/geocode":
            status, answer = 404, {"error": "no such endpoint"}
        elif not isinstance(data, dict) or "q" not in data:
            status, answer = 400, {"error": {"message": "q is required", "code": "missing_q"}}
        else:
            self.bodies.append(data)
            status, answer = 200, {"query": data["q"], "lat": 48.8566, "lon": 2.3522}
            if headers.get(b"accept") == b"text/event-stream":
                await self._stream(data["q"], send)
                return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(answer)})

    @staticmethod
    async def _stream(query: str, send: Callable[[Message], Awaitable[None]]) -> None:
        start = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        for rank in range(3):
            event = orjson.dumps({"query": query, "rank": rank})
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n",
                        "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})


class ByHost(HttpTransport):
    """``geo.test`` to the geocoding API, anything else to the simulator."""

    def __init__(self, geo: HttpTransport, other: HttpTransport) -> None:
        self._geo, self._other = geo, other

    def _pick(self, url: str) -> HttpTransport:
        return self._geo if urlsplit(url).hostname == "geo.test" else self._other

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        return await self._pick(url).request(method, url, headers, body, timeout)

    async def open_stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpStreamResponse:
        return await self._pick(url).open_stream(method, url, headers, body, timeout)

    async def close(self) -> None:
        await self._geo.close()
        await self._other.close()


def _config(*, streams: bool = False, **auth: Any) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "server": {"admin_token": ADMIN_TOKEN, "watch_config": False},
            "routing": {"backoff_base_seconds": 0.0},
            "auth": auth,
            "providers": [
                {
                    "id": "sim",
                    "base_url": SIM_BASE,
                    "models": ["gpt-4o-mini"],
                    "keys": [{"id": "llm", "key": KEY_A}],
                },
                {
                    "id": "geo",
                    "kind": "generic",
                    "base_url": "http://geo.test/v1",
                    "models": ["geocode"],
                    "options": {
                        "path": "/geocode",
                        "key_name": "x-api-key",
                        **({"stream": "sse"} if streams else {}),
                    },
                    "keys": [{"id": "geo-bad", "key": BAD}, {"id": "geo-good", "key": GOOD}],
                },
            ],
        }
    )


async def test_raw_requests_pass_through_with_failover(sim: SimulatedProvider) -> None:
    geo = GeoApi()
    transport = ByHost(ASGITransport(geo), ASGITransport(sim))
    async with running_proxy(_config(), sim, transport=transport) as proxy:
        responses = [
            await proxy.client.post(
                "/v1/raw/geocode", json={"q": f"Paris {i}", "limit": 1, "model": "ignored"}
            )
            for i in range(4)
        ]
        bad_state = proxy.runtime.router.keys.get("geo-bad").state
        chat = await proxy.chat()
        llm_raw = await proxy.client.post("/v1/raw/gpt-4o-mini", json={"q": "x"})
        quota = await proxy.client.get("/api/v1/keys/geo-good/quota", headers=ADMIN)
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert response.json() == {"query": f"Paris {i}", "lat": 48.8566, "lon": 2.3522}
        assert response.headers["x-apikeyrouter-key-id"] == "geo-good"
        assert response.headers["x-apikeyrouter-provider"] == "geo"
        assert response.headers["x-request-id"]
    # The body went upstream as sent, minus the router's own fields.
    assert geo.bodies[0] == {"q": "Paris 0", "limit": 1}
    # The invalid key (listed first) was tried once, marked invalid, and failed over from.
    attempts = [int(r.headers["x-apikeyrouter-attempts"]) for r in responses]
    assert attempts == [2, 1, 1, 1]
    assert bad_state is KeyState.INVALID
    assert chat.headers["x-apikeyrouter-provider"] == "sim"  # LLM traffic unaffected
    # Only providers that take raw calls serve /v1/raw (the OpenAI adapter does not).
    assert llm_raw.status_code == 404
    assert llm_raw.json()["error"]["code"] == "model_not_found"
    assert quota.json()["prediction"]["key_id"] == "geo-good"
    for response in (*responses, chat):
        assert GOOD not in response.text
        assert BAD not in response.text


async def test_raw_streams_server_sent_events_with_failover(sim: SimulatedProvider) -> None:
    geo = GeoApi()
    transport = ByHost(ASGITransport(geo), ASGITransport(sim))
    async with running_proxy(_config(streams=True), sim, transport=transport) as proxy:
        streamed = await proxy.client.post(
            "/v1/raw/geocode", json={"q": "Lyon", "stream": True, "limit": 3}
        )
        whole = await proxy.client.post("/v1/raw/geocode", json={"q": "Lyon"})
        bad = await proxy.client.post("/v1/raw/geocode", json={"q": "Lyon", "stream": "yes"})
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-apikeyrouter-key-id"] == "geo-good"
    assert streamed.headers["x-apikeyrouter-attempts"] == "2"  # the invalid key first
    events = sse_events(streamed.text)
    assert [orjson.loads(e) for e in events[:-1]] == [
        {"query": "Lyon", "rank": rank} for rank in range(3)
    ]
    assert events[-1] == "[DONE]"
    assert geo.bodies[0] == {"q": "Lyon", "limit": 3}  # the router's field stayed here
    assert whole.json()["lat"] == 48.8566  # without "stream", one JSON answer as before
    assert bad.status_code == 400
    assert (bad.json()["error"]["param"], bad.json()["error"]["message"]) == (
        "stream", "stream must be a boolean"
    )  # fmt: skip
    assert GOOD not in streamed.text


async def test_raw_streaming_needs_a_provider_that_streams(sim: SimulatedProvider) -> None:
    transport = ByHost(ASGITransport(GeoApi()), ASGITransport(sim))
    async with running_proxy(_config(), sim, transport=transport) as proxy:
        response = await proxy.client.post("/v1/raw/geocode", json={"q": "x", "stream": True})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "required capabilities" in response.json()["error"]["message"]


async def test_raw_route_errors(sim: SimulatedProvider) -> None:
    geo = GeoApi()
    transport = ByHost(ASGITransport(geo), ASGITransport(sim))
    async with running_proxy(_config(), sim, transport=transport) as proxy:
        client = proxy.client
        upstream_400 = await client.post("/v1/raw/geocode", json={"city": "Paris"})
        empty = await client.post("/v1/raw/geocode")
        not_object = await client.post("/v1/raw/geocode", json=["Paris"])
        not_json = await client.post("/v1/raw/geocode", content=b"{nope")
        get = await client.get("/v1/raw/geocode")
        unknown = await client.post("/v1/raw/no-such-model", json={"q": "x"})
        bare_prefix = await client.post("/v1/raw/", json={"q": "x"})
    assert upstream_400.status_code == 400
    assert "q is required" in upstream_400.json()["error"]["message"]
    assert empty.status_code == 400  # {} went upstream, which wants q
    assert not_object.status_code == 400
    assert not_object.json()["error"]["message"] == "request body must be a JSON object"
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == "invalid_json"
    assert get.status_code == 405
    assert get.headers["allow"] == "POST"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert bare_prefix.status_code == 404


async def test_raw_route_needs_a_client_key_when_clients_are_configured(
    sim: SimulatedProvider,
) -> None:
    geo = GeoApi()
    transport = ByHost(ASGITransport(geo), ASGITransport(sim))
    clients: dict[str, Any] = {"clients": [{"id": "app", "key": "app-client-key-1"}]}
    async with running_proxy(_config(**clients), sim, transport=transport) as proxy:
        anonymous = await proxy.client.post("/v1/raw/geocode", json={"q": "x"})
        known = await proxy.client.post(
            "/v1/raw/geocode",
            json={"q": "x"},
            headers={"Authorization": "Bearer app-client-key-1"},
        )
        chat = await proxy.client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"Authorization": "Bearer app-client-key-1"},
        )
        metrics = (await proxy.client.get("/metrics")).text
    assert anonymous.status_code == 401
    assert known.status_code == 200
    assert chat.status_code == 200
    assert 'route="/v1/raw/{model}"' in metrics
