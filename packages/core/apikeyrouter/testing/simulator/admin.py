"""The ``/_sim/`` admin API: steer a running simulator over HTTP.

Tests that run the simulator in another process (the proxy's e2e suite, the demo) cannot call
Python methods on it, so every control the :class:`SimulatedProvider` offers in Python is also
reachable here. No auth: this is a test server and must never face the internet.

Routes::

    GET    /_sim/stats[?window_s=60]      per-label counters + max admitted in a window
    GET    /_sim/keys                     key configs (masked) and live limit state
    POST   /_sim/keys                     add/replace key(s): a config object or a list
    DELETE /_sim/keys/{key}               remove a key (by key or label)
    POST   /_sim/keys/{key}/faults        arm fault(s): a fault object or a list
    DELETE /_sim/keys/{key}/faults        disarm all faults of a key
    POST   /_sim/latency                  {"latency_ms", "jitter_ms", "chunk_delay_ms", "key"?}
    POST   /_sim/reset                    {"stats_only": false} restores the initial config
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from . import openai_wire as wire
from ._coerce import as_bool, as_float, opt_float
from .asgi import ClientDisconnected, Receive, Scope, Send, read_body, send_json
from .config import SimKeyConfig
from .faults import Fault
from .stats import max_in_window

if TYPE_CHECKING:
    from .provider import SimulatedProvider

__all__ = ["AdminApi"]

_PREFIX = "/_sim/"
_KEYS = "/_sim/keys/"
_FAULTS_SUFFIX = "/faults"


class AdminApi:
    def __init__(self, provider: SimulatedProvider) -> None:
        self._p = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive)
        except ClientDisconnected:
            return
        try:
            status, payload = self._dispatch(scope, body)
        except wire.ApiError as exc:
            status, payload = exc.status, exc.payload
        except KeyError as exc:
            status, payload = 404, wire.error_body(str(exc.args[0]), "not_found")
        except ValueError as exc:
            status, payload = 400, wire.error_body(str(exc), "invalid_request_error")
        await send_json(send, status, payload)

    def _dispatch(self, scope: Scope, body: bytes) -> tuple[int, Any]:
        method: str = scope["method"]
        path: str = scope["path"]
        route = (method, path)
        if route == ("GET", "/_sim/stats"):
            return 200, self._stats(scope)
        if route == ("GET", "/_sim/keys"):
            return 200, {"keys": self._p.describe_keys()}
        if route == ("POST", "/_sim/keys"):
            items = _items(_json(body))
            labels = [self._p.add_key(SimKeyConfig.from_mapping(_obj(i))) for i in items]
            return 201, {"labels": labels}
        if route == ("POST", "/_sim/latency"):
            return 200, self._latency(_obj(_json(body)))
        if route == ("POST", "/_sim/reset"):
            data = _obj(_json(body)) if body.strip() else {}
            self._p.reset(stats_only=as_bool(data.get("stats_only", False), "stats_only"))
            return 200, {"reset": True}
        if path.startswith(_KEYS):
            return self._key_route(method, path[len(_KEYS) :], body)
        raise wire.ApiError(
            404, wire.error_body(f"Invalid URL ({method} {path})", "invalid_request_error")
        )

    def _key_route(self, method: str, rest: str, body: bytes) -> tuple[int, Any]:
        if rest.endswith(_FAULTS_SUFFIX):
            key = rest[: -len(_FAULTS_SUFFIX)]
            if method == "POST":
                faults = [Fault.from_mapping(_obj(item)) for item in _items(_json(body))]
                for fault in faults:
                    self._p.inject_fault(key, fault)
                return 200, {"label": self._p.label_of(key), "added": len(faults)}
            if method == "DELETE":
                return 200, {"label": self._p.label_of(key), "cleared": self._p.clear_faults(key)}
        elif method == "DELETE":
            label = self._p.label_of(rest)
            self._p.remove_key(rest)
            return 200, {"deleted": label}
        raise wire.ApiError(
            405, wire.error_body(f"Method {method} not allowed here", "invalid_request_error")
        )

    def _stats(self, scope: Scope) -> dict[str, Any]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        window_s = as_float(query.get("window_s", ["60"])[0], "window_s")
        out: dict[str, Any] = {}
        for label, stats in self._p.stats().items():
            entry: dict[str, Any] = stats.as_dict()
            if label in self._p.labels():
                entry["max_admitted_in_window"] = max_in_window(
                    self._p.admission_times(label), window_s
                )
            out[label] = entry
        return {"window_s": window_s, "keys": out}

    def _latency(self, data: Mapping[str, Any]) -> dict[str, Any]:
        key = data.get("key")
        if key is not None and not isinstance(key, str):
            raise ValueError("'key' must be a string")
        self._p.set_latency(
            opt_float(data.get("latency_ms"), "latency_ms"),
            opt_float(data.get("jitter_ms"), "jitter_ms"),
            opt_float(data.get("chunk_delay_ms"), "chunk_delay_ms"),
            key=key,
        )
        return {"latency_ms": self._p.latency_ms, "jitter_ms": self._p.jitter_ms}


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("the request body is not valid JSON") from None


def _items(data: Any) -> list[Any]:
    return data if isinstance(data, list) else [data]


def _obj(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError("expected a JSON object")
    return data
