"""A real MongoDB wire-compatible server for the tests: ``nx-27017`` (MIT, from PyPI).

Started once per test session as a subprocess on a free port with a temporary data directory
(one SQLite file per database), stopped at the end. Startup polls ``ping`` against a deadline;
a server that cannot start fails the tests with its log, it never skips them.

Fixtures (import them into a test module to use them):

* ``nx_server``: the running server (``url``, ``port``, ``data_dir``).
* ``mongo_database``: a fresh database name per test, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command() -> list[str]:
    """The installed console script (next to this interpreter), else the module it runs."""
    script = Path(sys.executable).with_name("nx-27017")
    if script.exists():
        return [str(script)]
    found = shutil.which("nx-27017")
    if found:
        return [found]
    return [sys.executable, "-c", "from nx_27017.nx_27017 import main; main()"]


@dataclass
class NxServer:
    port: int
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        return MongoClient(self.url, serverSelectionTimeoutMS=2_000, **options)

    @classmethod
    def start(cls, root: Path) -> NxServer:
        port = _free_port()
        log = (root / "server.log").open("ab")
        try:
            process = subprocess.Popen(  # noqa: S603 (a fixed command, no user input)
                [
                    *_command(),
                    "--data-dir",
                    str(root / "data"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--pid-file",
                    str(root / "nx.pid"),
                    "--log-file",
                    str(root / "nx-internal.log"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        finally:
            log.close()
        server = cls(port, root, process)
        server.wait_until_ready()
        return server

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nx-27017 exited with code {self.process.returncode} before answering "
                    f"ping on port {self.port}:\n{self.log}"
                )
            client: MongoClient[dict[str, Any]] = MongoClient(
                self.url, serverSelectionTimeoutMS=250, connectTimeoutMS=250
            )
            try:
                client.admin.command("ping")
                return
            except PyMongoError as exc:
                last_error = exc
            finally:
                client.close()
        self.stop()
        raise RuntimeError(
            f"nx-27017 did not answer ping within {START_TIMEOUT_SECONDS:.0f} s on port "
            f"{self.port} ({last_error!r}):\n{self.log}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)


@pytest.fixture(scope="session", name="nx_server")
def nx_server_fixture() -> Iterator[NxServer]:
    root = Path(tempfile.mkdtemp(prefix="akr-nx-27017-"))
    try:
        try:
            server = NxServer.start(root)
        except RuntimeError as first:
            # The free port may have been taken between probing and binding: try once more.
            if "exited" not in str(first):
                raise
            server = NxServer.start(root)
    except RuntimeError as exc:
        pytest.fail(f"cannot start the MongoDB test server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("AKR_KEEP_NX_DATA") is None:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="mongo_database")
def mongo_database_fixture(nx_server: NxServer) -> Iterator[str]:
    name = f"akr_test_{uuid.uuid4().hex[:16]}"
    yield name
    client = nx_server.client()
    try:
        with contextlib.suppress(PyMongoError):
            client.drop_database(name)
    finally:
        client.close()
