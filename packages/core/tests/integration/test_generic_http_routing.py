"""Pooling keys of a non-LLM API through ApiKeyRouter over real HTTP.

A tiny geocoding API (uvicorn, a thread, a free port) takes its key in the ``key`` query
parameter and allows each key 5 requests a minute, announced in ``X-RateLimit-*`` headers. Of
four keys one is invalid (401) and one is drained by "another application" (429 with
``Retry-After``). The router must fail over past both, use the headers to stop before the
good keys 429, pool the keys' capacity, bring the throttled key back when its time comes, and
never let the keys (which travel in URLs) into a log line or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
import uvicorn
from apikeyrouter import (
    ApiKeyRouter,
    Endpoint,
    InvalidRequestError,
    KeyState,
    NoKeyAvailableError,
    RequestIntent,
    RetryPolicy,
)
from apikeyrouter.infrastructure.adapters.generic_http_adapter import GenericHttpAdapter
from apikeyrouter.infrastructure.adapters.generic_http_config import GenericHttpConfig
from apikeyrouter.infrastructure.observability.logger import LOGGER_NAME, configure_logging
from apikeyrouter.utils.validation import intent_from_openai

from tests.fake_clock import FakeClock

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

START = 1_700_000_000.0
WINDOW = 60
PER_WINDOW = 5
INVALID = "geo-invalid-Qm4Zt7Wc2Lp9Xs"
DRAINED = "geo-drained-Hv3Nk8Rb5Jd1Fy"
GOOD_A = "geo-goodaaa-Ta6Ue2Gm9Kq4Wz"
GOOD_B = "geo-goodbbb-Pc7Yx3Ln8Vh5Bs"
SECRETS = (INVALID, DRAINED, GOOD_A, GOOD_B)
DRAINED_UNTIL = START + 120


class GeocodingApi:
    """``GET /v1/geocode?q=...&key=...``: per-key fixed windows, on the test's clock."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self.calls: Counter[tuple[str, int]] = Counter()  # (key, status) -> count
        self.queries: list[dict[str, list[str]]] = []

    def served(self, key: str) -> int:
        return self.calls[(key, 200)]

    def _answer(
        self, key: str | None, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], Any]:
        now = self._clock()
        if key not in (DRAINED, GOOD_A, GOOD_B):
            return 401, {}, {"error": {"message": f"API key {key} is not valid"}}
        if key == DRAINED and now < DRAINED_UNTIL:
            wait = str(math.ceil(DRAINED_UNTIL - now))
            return 429, {"retry-after": wait}, {"error": "daily limit shared with another app"}
        start, used = self._windows.get(key, (now, 0))
        if now >= start + WINDOW:
            start, used = now, 0
        reset = str(int(start + WINDOW))
        if used >= PER_WINDOW:
            wait = str(math.ceil(start + WINDOW - now))
            return 429, {"retry-after": wait, "x-ratelimit-reset": reset}, {"error": "slow down"}
        used += 1
        self._windows[key] = (start, used)
        headers = {
            "x-ratelimit-limit": str(PER_WINDOW),
            "x-ratelimit-remaining": str(PER_WINDOW - used),
            "x-ratelimit-reset": reset,
        }
        place = query.get("q", ["?"])[0]
        return 200, headers, {"query": place, "lat": 48.8566, "lon": 2.3522}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        query = parse_qs(scope["query_string"].decode())
        key = query.pop("key", [None])[0]
        if scope["method"] != "GET" or scope["path"] != "/v1/geocode":
            headers: dict[str, str] = {}
            status, body = 404, {"error": "no such endpoint"}
        else:
            self.queries.append(query)
            status, headers, body = self._answer(key, query)
        self.calls[(key or "", status)] += 1
        raw = [(b"content-type", b"application/json")]
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})


class _Server(uvicorn.Server):
    """Says when it listens, so the test never sleeps to guess."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._ready.set()


@contextlib.contextmanager
def serve(app: GeocodingApi) -> Iterator[str]:
    """``app`` over real HTTP on a free port (bound here first, so no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        ws="none",
    )
    ready = threading.Event()
    server = _Server(config, ready)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not ready.wait(10):
            raise RuntimeError("the geocoding API did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Env:
    router: ApiKeyRouter
    api: GeocodingApi
    clock: FakeClock
    ids: dict[str, str]  # secret -> key id


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    buffer = io.StringIO()
    configure_logging("DEBUG", buffer)
    yield buffer
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock(START)
    api = GeocodingApi(clock)
    with serve(api) as url:
        config = GenericHttpConfig(
            base_url=url,
            method="GET",
            path="/v1/{model}",
            key_in="query",
            key_name="key",
            rate_limit_headers={
                "requests_limit": "X-RateLimit-Limit",
                "requests_remaining": "X-RateLimit-Remaining",
                "requests_reset": "X-RateLimit-Reset",
                "reset_format": "epoch",
            },
        )
        router = ApiKeyRouter(
            clock=clock,
            objective="fairness",
            retry_policy=RetryPolicy(
                max_attempts=5,
                deadline_seconds=10.0,
                attempt_timeout_seconds=5.0,
                backoff_base_seconds=0.0,
            ),
        )
        await router.register_provider(
            "geo", GenericHttpAdapter(config, clock=clock), models=["geocode"]
        )
        ids = {}
        for secret in SECRETS:
            ids[secret] = (await router.register_key(secret, "geo")).id
        try:
            yield Env(router, api, clock, ids)
        finally:
            await router.close()


def geocode(place: str) -> RequestIntent:
    # A non-LLM call: Endpoint.RAW meters requests only and passes the body through.
    return intent_from_openai({"model": "geocode", "q": place}, Endpoint.RAW)


async def route_many(env: Env, count: int, tag: str) -> Counter[str]:
    """Send ``count`` requests one after another; how many each key id served (and, under
    ``"attempts"``, how many upstream calls they took in all)."""
    used: Counter[str] = Counter()
    for index in range(count):
        response = await env.router.route(geocode(f"{tag} {index}"))
        assert response.body == {"query": f"{tag} {index}", "lat": 48.8566, "lon": 2.3522}
        assert response.usage.total_tokens == 0
        used[response.key_used] += 1
        used["attempts"] += len(response.attempts)
    return used


def assert_no_key_material(text: str) -> None:
    for secret in SECRETS:
        for index in range(len(secret) - 7):
            assert secret[index : index + 8] not in text, text


async def test_router_pools_query_keys_of_a_plain_http_api(env: Env, logs: io.StringIO) -> None:
    api, ids, router = env.api, env.ids, env.router

    # Minute one: the bad and the drained key are tried at most once each, then put aside;
    # the good keys serve 5 each and are rested on their "0 remaining" before the API 429s.
    first = await route_many(env, 2 * PER_WINDOW, "minute-1")
    # Two of the ten requests failed over (401, then 429) within themselves and still served.
    assert first == {ids[GOOD_A]: PER_WINDOW, ids[GOOD_B]: PER_WINDOW, "attempts": 12}
    with pytest.raises(NoKeyAvailableError) as exhausted:
        await router.route(geocode("one too many"))
    assert exhausted.value.retry_after is not None
    assert 0 < exhausted.value.retry_after <= WINDOW
    assert api.calls[(INVALID, 401)] == 1
    assert api.calls[(DRAINED, 429)] == 1
    assert api.calls[(GOOD_A, 429)] == api.calls[(GOOD_B, 429)] == 0
    assert router.keys.get(ids[INVALID]).state is KeyState.INVALID
    assert router.keys.get(ids[DRAINED]).state is KeyState.THROTTLED
    assert all("model" not in query and "stream" not in query for query in api.queries)

    # A minute later the good keys are back; the drained key's Retry-After has not passed.
    env.clock.advance(70)
    second = await route_many(env, 2 * PER_WINDOW, "minute-2")
    assert second == {ids[GOOD_A]: PER_WINDOW, ids[GOOD_B]: PER_WINDOW, "attempts": 10}
    assert api.calls[(DRAINED, 429)] == 1
    assert api.served(DRAINED) == 0

    # Past the Retry-After, the drained key rejoins the pool: three keys, three windows.
    env.clock.advance(80)
    third = await route_many(env, 3 * PER_WINDOW, "minute-3")
    assert third == {
        ids[GOOD_A]: PER_WINDOW,
        ids[GOOD_B]: PER_WINDOW,
        ids[DRAINED]: PER_WINDOW,
        "attempts": 15,
    }
    with pytest.raises(NoKeyAvailableError) as again:
        await router.route(geocode("over the pooled limit"))
    for secret in (DRAINED, GOOD_A, GOOD_B):  # each rested on its own "0 remaining"
        assert router.keys.get(ids[secret]).state is KeyState.THROTTLED
    assert api.calls[(INVALID, 401)] == 1  # an invalid key is never retried
    assert sum(n for (_, status), n in api.calls.items() if status == 429) == 1

    # The keys travelled in every URL, yet appear in no log line and no error.
    assert_no_key_material(logs.getvalue())
    assert_no_key_material(str(exhausted.value) + str(again.value))
    assert_no_key_material(repr(router.adapter("geo")))


async def test_one_request_tries_every_usable_key_then_says_when_to_come_back(env: Env) -> None:
    """With only the bad and the drained key left, one request tries both, then reports the
    drained key's Retry-After; a good key coming back serves the next request."""
    router = env.router
    for secret in (GOOD_A, GOOD_B):
        await router.keys.set_state(env.ids[secret], KeyState.DISABLED, "test: leave two keys")
    with pytest.raises(NoKeyAvailableError) as caught:
        await router.route(geocode("nobody can serve"))
    assert caught.value.attempts == 2
    assert caught.value.retry_after == pytest.approx(DRAINED_UNTIL - START)
    attempts = sorted(env.api.calls)
    assert attempts == [(DRAINED, 429), (INVALID, 401)]
    await router.keys.set_state(env.ids[GOOD_A], KeyState.AVAILABLE, "test: one good key back")
    response = await router.route(geocode("Lyon"))
    assert response.key_used == env.ids[GOOD_A]
    assert response.body["query"] == "Lyon"

    # As a chat request the same body is refused (no messages); as a raw call it is served.
    with pytest.raises(InvalidRequestError, match="messages"):
        await router.route({"model": "geocode", "q": "Paris"})
    raw = await router.route({"model": "geocode", "q": "Paris"}, endpoint=Endpoint.RAW)
    assert raw.body["query"] == "Paris"
    assert raw.usage.total_tokens == 0


async def test_concurrent_requests_share_the_pool(env: Env) -> None:
    results = await asyncio.gather(
        *(env.router.route(geocode(f"burst {i}")) for i in range(2 * PER_WINDOW)),
        return_exceptions=True,
    )
    served = [r for r in results if not isinstance(r, BaseException)]
    assert len(served) == 2 * PER_WINDOW, results
    assert env.api.served(GOOD_A) == env.api.served(GOOD_B) == PER_WINDOW
