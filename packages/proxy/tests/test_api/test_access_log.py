"""The access log buffers its lines and writes them together, never losing one at shutdown."""

from __future__ import annotations

import asyncio
import logging
from io import StringIO

import orjson
import pytest
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter_proxy.middleware.context import RequestContext
from apikeyrouter_proxy.observability.access_log import MAX_PENDING_LINES, AccessLog

from .conftest import KEY_A
from .support import chat_body, make_config, running_proxy


class CountingStream(StringIO):
    """Remembers each write call, and wakes a waiter on the first."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.calls.append(text)
        self.written.set()
        return super().write(text)


def context(n: int) -> RequestContext:
    scope = {"method": "POST", "headers": [(b"x-request-id", f"req-{n}".encode())]}
    ctx = RequestContext(scope, "/v1/chat/completions")
    ctx.route, ctx.status = "/v1/chat/completions", 200
    return ctx


@pytest.fixture(autouse=True)
def _info_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="apikeyrouter")  # access lines are written at INFO


def request_ids(stream: CountingStream) -> list[str]:
    return [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()]


async def test_lines_wait_and_are_written_in_one_call() -> None:
    stream = CountingStream()
    log = AccessLog(stream=stream, flush_seconds=60.0)
    for n in range(3):
        log.write(context(n), 0.001)
    assert stream.calls == []
    log.flush()
    assert len(stream.calls) == 1
    assert request_ids(stream) == ["req-0", "req-1", "req-2"]
    log.flush()  # nothing waiting: no empty write
    assert len(stream.calls) == 1


async def test_waiting_lines_are_written_after_flush_seconds() -> None:
    stream = CountingStream()
    log = AccessLog(stream=stream, flush_seconds=0.01)
    log.write(context(1), 0.001)
    log.write(context(2), 0.001)
    await asyncio.wait_for(stream.written.wait(), timeout=10.0)
    assert len(stream.calls) == 1
    assert request_ids(stream) == ["req-1", "req-2"]


async def test_zero_flush_seconds_writes_every_line_at_once() -> None:
    stream = CountingStream()
    log = AccessLog(stream=stream, flush_seconds=0.0)
    log.write(context(1), 0.001)
    log.write(context(2), 0.001)
    assert len(stream.calls) == 2


async def test_a_full_buffer_is_written_without_waiting() -> None:
    stream = CountingStream()
    log = AccessLog(stream=stream, flush_seconds=60.0)
    for n in range(MAX_PENDING_LINES):
        log.write(context(n), 0.001)
    assert len(stream.calls) == 1
    assert len(request_ids(stream)) == MAX_PENDING_LINES


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    stream = CountingStream()
    AccessLog(stream=stream, flush_seconds=60.0).write(context(1), 0.001)
    assert request_ids(stream) == ["req-1"]


async def test_the_proxy_writes_waiting_lines_when_it_stops(sim: SimulatedProvider) -> None:
    stream = CountingStream()
    config = make_config([{"key": KEY_A}], logging={"access_log_flush_seconds": 10.0})
    async with running_proxy(config, sim) as proxy:
        proxy.runtime.access_log._stream = stream
        response = await proxy.client.post("/v1/chat/completions", json=chat_body())
        assert response.status_code == 200
        assert stream.calls == []  # still waiting: the interval is ten seconds
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["path"], line["status"]) for line in lines] == [("/v1/chat/completions", 200)]
