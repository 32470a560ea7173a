"""Run an app under uvicorn in a background thread, on a port bound before it starts.

For the demo (and anyone embedding the proxy in a script): binding the socket first makes
``port=0`` yield a known free port with no race, and readiness comes from uvicorn's own startup
signal, not from polling.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import uvicorn

from apikeyrouter_proxy.asgi_types import ASGIApp


class _SignallingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._started_event.set()


class ThreadedServer:
    """``with ThreadedServer(app) as server: ... server.url ...``"""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._started = threading.Event()
        config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            log_level="warning",
        )
        self._server = _SignallingServer(config, self._started)
        self._thread = threading.Thread(target=self._run, name="proxy-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self._thread.start()
        waited = 0.0
        # Waiting on uvicorn's startup signal; the short slices only notice a dead thread.
        while not self._started.wait(0.05):
            waited += 0.05
            if not self._thread.is_alive() or waited >= timeout:
                self.stop()
                raise RuntimeError("the server did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
