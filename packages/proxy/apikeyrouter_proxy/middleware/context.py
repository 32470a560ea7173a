"""Per-request facts shared by the gateway, the handlers, the access log and the metrics.

One slotted object, filled as the request goes: the gateway creates it (scanning the headers
once for the few it needs), the handler records the routing outcome, and the gateway turns it
into one log line and a few metric updates at the end.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import MutableMapping
from typing import Any

from apikeyrouter.domain.models.response import AttemptRecord

#: Where non-hot-path code (FastAPI routes) finds the context in the ASGI scope.
SCOPE_KEY = "apikeyrouter.context"

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_random = random.Random()


def new_request_id() -> str:
    """Unique enough to correlate log lines; not a secret, so no syscall per request."""
    return f"req_{_random.getrandbits(64):016x}"


class RequestContext:
    __slots__ = (
        "attempt_records",
        "attempts",
        "authorization",
        "client_id",
        "content_length",
        "cost_usd",
        "key_id",
        "method",
        "path",
        "provider",
        "request_id",
        "response_started",
        "route",
        "started",
        "status",
        "upstream_seconds",
    )

    def __init__(self, scope: MutableMapping[str, Any], path: str) -> None:
        self.started = time.perf_counter()
        self.method: str = scope["method"]
        self.path = path
        self.route = ""
        self.status = 0
        self.response_started = False
        self.key_id: str | None = None
        self.provider: str | None = None
        self.client_id: str | None = None
        self.attempts = 0
        self.attempt_records: list[AttemptRecord] | None = None
        self.upstream_seconds: float | None = None
        self.cost_usd: float | None = None
        request_id: str | None = None
        authorization: bytes | None = None
        content_length: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    request_id = value.decode("ascii")
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else None
        self.request_id = request_id or new_request_id()
        self.authorization = authorization
        self.content_length = content_length

    def record_attempts(self, records: list[AttemptRecord]) -> None:
        """Note the routing outcome: attempts made and the time spent waiting on upstreams."""
        self.attempts = len(records)
        self.attempt_records = records
        upstream_ms = 0.0
        for record in records:
            upstream_ms += record.latency_ms
        self.upstream_seconds = upstream_ms / 1000.0

    def bearer_token(self) -> bytes | None:
        value = self.authorization
        if value is None:
            return None
        scheme, _, token = value.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return None
        return token
