"""Run the simulator over real HTTP: in a background thread, in the current loop, or blocking.

Tests need a real socket (keep-alive pools, timeouts, connection drops only exist there) and
must not guess when the server is up: the socket is bound before uvicorn starts (so port 0
yields a known free port with no race) and readiness is signalled from uvicorn's own startup.
Shutdown first releases requests held by ``timeout`` faults, so it never waits out a 30 s hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn

from .asgi import SimulatedDisconnect
from .provider import SimulatedProvider

__all__ = [
    "SimulatorAddress",
    "SimulatorServer",
    "run_simulator",
    "run_simulator_in_thread",
    "serve_simulator",
]


@dataclass(frozen=True, slots=True)
class SimulatorAddress:
    host: str
    port: int

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. ``http://127.0.0.1:8900/v1``."""
        return f"{self.root_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The Anthropic base URL (the root: clients append ``/v1/messages``)."""
        return self.root_url

    @property
    def gemini_base_url(self) -> str:
        """The Gemini base URL, e.g. ``http://127.0.0.1:8900/v1beta``."""
        return f"{self.root_url}/v1beta"


class _DropFilter(logging.Filter):
    """Hide uvicorn's error log for connections the simulator cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDisconnect)


_DROP_FILTER = _DropFilter()


def _install_drop_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _DROP_FILTER not in logger.filters:
        logger.addFilter(_DROP_FILTER)


class _Server(uvicorn.Server):
    """uvicorn.Server that reports readiness through a callback instead of being polled."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _config(
    provider: SimulatedProvider, loop: str, http: str, embedded: bool = True
) -> uvicorn.Config:
    """uvicorn settings: quiet, no access log. ``embedded`` servers (thread, current loop) leave
    the process's logging configuration alone; the CLI lets uvicorn install its console logs."""
    _install_drop_filter()
    extra: dict[str, Any] = {"log_config": None} if embedded else {}
    return uvicorn.Config(
        provider,
        loop=loop,
        http=http,
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        **extra,
    )


class SimulatorServer:
    """The simulator under uvicorn in a daemon thread; a context manager.

    ``port=0`` picks a free port. ``loop``/``http`` are uvicorn's choices ("auto" takes uvloop
    and httptools when installed). :meth:`start` returns once the server accepts connections.
    """

    def __init__(
        self,
        provider: SimulatedProvider,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        loop: str = "auto",
        http: str = "auto",
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.provider = provider
        self._host = host
        self._port = port
        self._loop = loop
        self._http = http
        self._startup_timeout_s = startup_timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._address: SimulatorAddress | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> SimulatorAddress:
        if self._address is None:
            raise RuntimeError("the simulator server is not running")
        return self._address

    @property
    def base_url(self) -> str:
        return self.address.base_url

    @property
    def root_url(self) -> str:
        return self.address.root_url

    @property
    def anthropic_base_url(self) -> str:
        return self.address.anthropic_base_url

    @property
    def gemini_base_url(self) -> str:
        return self.address.gemini_base_url

    @property
    def port(self) -> int:
        return self.address.port

    def start(self) -> SimulatorServer:
        if self._thread is not None:
            return self
        sock = _bind(self._host, self._port)
        ready = threading.Event()
        server = _Server(_config(self.provider, self._loop, self._http), ready.set)
        thread = threading.Thread(
            target=self._run, args=(server, sock), name="apikeyrouter-simulator", daemon=True
        )
        self._server, self._thread = server, thread
        address = SimulatorAddress(self._host, sock.getsockname()[1])
        thread.start()
        # Waiting on the event (not sleeping): it is set by uvicorn's startup, or we notice the
        # thread died. The short timeout only bounds how fast a crash is noticed.
        deadline = self._startup_timeout_s
        while not ready.wait(timeout=min(0.05, deadline)):
            deadline -= 0.05
            if not thread.is_alive() or deadline <= 0:
                self.stop()
                raise RuntimeError("the simulator server failed to start") from self._error
        self._address = address
        return self

    def _run(self, server: _Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            sock.close()

    def stop(self, timeout_s: float = 15.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.provider.release_holds()
        server.should_exit = True
        thread.join(timeout_s)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout_s)
        self._server = self._thread = None
        self._address = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_simulator_in_thread(
    provider: SimulatedProvider, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> SimulatorServer:
    """Start a :class:`SimulatorServer` now; use it as ``with run_simulator_in_thread(p) as s:``
    (or call ``.stop()``). ``options`` go to :class:`SimulatorServer`."""
    return SimulatorServer(provider, host, port, **options).start()


@contextlib.asynccontextmanager
async def serve_simulator(
    provider: SimulatedProvider,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    http: str = "auto",
) -> AsyncIterator[SimulatorAddress]:
    """Serve in the running event loop: ``async with serve_simulator(p) as address: ...``."""
    sock = _bind(host, port)
    started = asyncio.Event()
    # The loop already exists: uvicorn's ``loop`` option is moot here.
    server = _Server(_config(provider, "none", http), started.set)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            waiter.cancel()
            await task  # re-raises the startup error, if any
            raise RuntimeError("the simulator server failed to start")
        yield SimulatorAddress(host, sock.getsockname()[1])
    finally:
        provider.release_holds()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


def run_simulator(
    provider: SimulatedProvider,
    host: str = "127.0.0.1",
    port: int = 8900,
    *,
    on_ready: Callable[[SimulatorAddress], None] | None = None,
    loop: str = "auto",
    http: str = "auto",
) -> None:
    """Serve until interrupted (Ctrl-C); ``on_ready`` gets the address once it is listening."""
    sock = _bind(host, port)
    address = SimulatorAddress(host, sock.getsockname()[1])

    def started() -> None:
        if on_ready is not None:
            on_ready(address)

    try:
        _Server(_config(provider, loop, http, embedded=False), started).run(sockets=[sock])
    finally:
        sock.close()
