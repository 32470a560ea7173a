"""The simulated provider: configuration, live state and the Python control surface.

:class:`SimulatedProvider` is itself the ASGI application (``httpx.ASGITransport(app=provider)``
or ``uvicorn.run(provider)``), and the object tests use to steer it: add keys, arm faults, read
what each key saw. All mutable state sits behind one lock because the server usually runs in a
background thread while the test thread pokes at it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .app import SimulatorApp
from .asgi import Headers, Receive, Scope, Send
from .config import SimKeyConfig, mask_key
from .faults import Fault, FaultMode
from .holds import HoldRegistry
from .limiter import Decision, HeaderFn, KeyState, decide
from .stats import KeyStats, max_in_window

__all__ = [
    "DEFAULT_ANTHROPIC_MODELS",
    "DEFAULT_GEMINI_MODELS",
    "DEFAULT_MODELS",
    "UNKNOWN_LABEL",
    "SimulatedProvider",
]

DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
"""Models served over the OpenAI wire format unless ``models=`` replaces them."""
DEFAULT_ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
"""Models served over the Anthropic Messages API unless ``anthropic_models=`` replaces them."""
DEFAULT_GEMINI_MODELS = (
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-3.5-flash",
    "text-embedding-004",
    "gemini-embedding-001",
)
"""Models served over the Gemini API unless ``gemini_models=`` replaces them."""
UNKNOWN_LABEL = "<unknown>"
"""Statistics label for requests whose key is missing or not configured."""


class SimulatedProvider:
    """An OpenAI-, Anthropic- and Gemini-compatible upstream with per-key limits, latency and
    failure injection.

    Every key works over all three wire formats, sharing one set of buckets, quota, faults and
    statistics: the format is chosen by the request's path and the way it sends the key.
    ``keys`` are :class:`SimKeyConfig` objects or CLI-style specs (``"sk-a:rpm=60"``).
    ``models``, ``anthropic_models`` and ``gemini_models`` replace the default model list of
    each format (a key's own ``models`` restriction applies on top). ``latency_ms`` + uniform
    ``jitter_ms`` delay every admitted request before its first byte; ``chunk_delay_ms``
    separates streamed chunks (per-key values override all three). ``completion_tokens`` is the
    natural length of every reply (capped by the max tokens a request sets);
    ``embedding_dimensions`` the default vector size. ``seed``
    drives fault probabilities and jitter; ``clock`` (seconds, monotonic) drives the buckets and
    admission timestamps, so tests can move time by hand; ``wall_clock`` (seconds since the
    epoch) anchors the absolute reset times Anthropic's headers carry. ``max_admissions_kept``
    bounds the per-key admission history used by :meth:`max_admitted_in_window`.
    """

    def __init__(
        self,
        keys: Iterable[SimKeyConfig | str] = (),
        *,
        models: Iterable[str] | None = None,
        anthropic_models: Iterable[str] | None = None,
        gemini_models: Iterable[str] | None = None,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        chunk_delay_ms: float = 0.0,
        completion_tokens: int = 16,
        embedding_dimensions: int = 8,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_admissions_kept: int = 100_000,
    ) -> None:
        if completion_tokens < 1 or embedding_dimensions < 1 or max_admissions_kept < 1:
            raise ValueError("completion_tokens, embedding_dimensions, max_admissions_kept >= 1")
        if min(latency_ms, jitter_ms, chunk_delay_ms) < 0:
            raise ValueError("latencies must not be negative")
        self.models: tuple[str, ...] = tuple(DEFAULT_MODELS if models is None else models)
        self.model_set = frozenset(self.models)
        self.anthropic_models: tuple[str, ...] = tuple(
            DEFAULT_ANTHROPIC_MODELS if anthropic_models is None else anthropic_models
        )
        self.anthropic_model_set = frozenset(self.anthropic_models)
        self.gemini_models: tuple[str, ...] = tuple(
            DEFAULT_GEMINI_MODELS if gemini_models is None else gemini_models
        )
        self.gemini_model_set = frozenset(self.gemini_models)
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.chunk_delay_ms = chunk_delay_ms
        self.completion_tokens = completion_tokens
        self.embedding_dimensions = embedding_dimensions
        self.clock = clock
        self.wall_clock = wall_clock
        self.holds = HoldRegistry()
        self._seed = seed
        self._keep = max_admissions_kept
        self._lock = threading.Lock()
        self._fault_rng = random.Random(seed)
        self._jitter_rng = random.Random(seed + 1)
        self._by_key: dict[str, KeyState] = {}
        self._by_label: dict[str, KeyState] = {}
        self._unknown = KeyStats()
        self._initial = tuple(_as_config(k) for k in keys)
        for config in self._initial:
            self.add_key(config)
        self._app = SimulatorApp(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        await self._app(scope, receive, send)

    # -- keys ---------------------------------------------------------------------------------

    def add_key(self, config: SimKeyConfig | str) -> str:
        """Add (or replace, with fresh state) a key; returns its statistics label."""
        config = _as_config(config)
        with self._lock:
            old = self._by_key.pop(config.key, None)
            if old is not None:
                del self._by_label[old.label]
            label = self._free_label(config)
            state = KeyState(config, label, self.clock(), self._keep)
            self._by_key[config.key] = state
            self._by_label[label] = state
        return label

    def _free_label(self, config: SimKeyConfig) -> str:
        if config.label is not None:
            if config.label in self._by_label or config.label == UNKNOWN_LABEL:
                raise ValueError(f"label {config.label!r} is already in use")
            return config.label
        # Masked short keys can collide ("sk-a", "sk-b" -> "s***"); number the later ones.
        base = mask_key(config.key)
        label, n = base, 1
        while label in self._by_label:
            n += 1
            label = f"{base}#{n}"
        return label

    def remove_key(self, key_or_label: str) -> None:
        with self._lock:
            state = self._state(key_or_label)
            del self._by_key[state.config.key]
            del self._by_label[state.label]

    def labels(self) -> list[str]:
        with self._lock:
            return list(self._by_label)

    def label_of(self, key_or_label: str) -> str:
        with self._lock:
            return self._state(key_or_label).label

    def describe_keys(self) -> list[dict[str, Any]]:
        """Config and live limit state of every key, without secrets (for ``GET /_sim/keys``)."""
        with self._lock:
            now = self.clock()
            out = []
            for state in self._by_key.values():
                info = state.config.to_public_dict()
                info["label"] = state.label
                info["quota_used"] = state.quota_used
                info["remaining_requests"] = None if state.rpm is None else state.rpm.remaining(now)
                info["remaining_tokens"] = None if state.tpm is None else state.tpm.remaining(now)
                info["pending_faults"] = len(state.faults)
                out.append(info)
            return out

    def _state(self, key_or_label: str) -> KeyState:
        state = self._by_key.get(key_or_label) or self._by_label.get(key_or_label)
        if state is None:
            raise KeyError(f"no such key or label: {mask_key(key_or_label)}")
        return state

    def lookup(self, key: str | None) -> KeyState | None:
        """The state for a bearer token (hot path: a plain dict read, no lock needed)."""
        return None if key is None else self._by_key.get(key)

    # -- faults and latency -------------------------------------------------------------------

    def inject_fault(
        self,
        key_or_label: str,
        fault: Fault | FaultMode | str,
        *,
        count: int = -1,
        probability: float = 1.0,
        timeout_s: float = 30.0,
        after_chunks: int = 1,
        retry_after_s: float = 1.0,
    ) -> None:
        """Arm a fault on a key. Pass a :class:`Fault`, or a mode plus the keyword options
        (which are ignored when a ready :class:`Fault` is given)."""
        if not isinstance(fault, Fault):
            fault = Fault(
                FaultMode(fault), count, probability, timeout_s, after_chunks, retry_after_s
            )
        with self._lock:
            self._state(key_or_label).faults.add(fault)

    def clear_faults(self, key_or_label: str) -> int:
        """Disarm every fault on a key; returns how many were armed."""
        with self._lock:
            faults = self._state(key_or_label).faults
            cleared = len(faults)
            faults.clear()
            return cleared

    def pending_faults(self, key_or_label: str) -> list[tuple[Fault, int]]:
        """Armed faults with their remaining counts (-1 = forever)."""
        with self._lock:
            return self._state(key_or_label).faults.pending()

    def set_latency(
        self,
        latency_ms: float | None = None,
        jitter_ms: float | None = None,
        chunk_delay_ms: float | None = None,
        *,
        key: str | None = None,
    ) -> None:
        """Change latency at run time, provider-wide or (``key=``) for one key; None = keep."""
        if any(v is not None and v < 0 for v in (latency_ms, jitter_ms, chunk_delay_ms)):
            raise ValueError("latencies must not be negative")
        with self._lock:
            if key is None:
                if latency_ms is not None:
                    self.latency_ms = latency_ms
                if jitter_ms is not None:
                    self.jitter_ms = jitter_ms
                if chunk_delay_ms is not None:
                    self.chunk_delay_ms = chunk_delay_ms
                return
            state = self._state(key)
            c = state.config
            state.config = replace(
                c,
                latency_ms=c.latency_ms if latency_ms is None else latency_ms,
                jitter_ms=c.jitter_ms if jitter_ms is None else jitter_ms,
                chunk_delay_ms=c.chunk_delay_ms if chunk_delay_ms is None else chunk_delay_ms,
            )

    def first_byte_delay_s(self, state: KeyState) -> float:
        """Seconds to wait before answering an admitted request: latency plus seeded jitter."""
        latency, jitter, _ = self.latency_config(state)
        if jitter:
            with self._lock:
                latency += self._jitter_rng.uniform(0.0, jitter)
        return latency / 1000.0

    def latency_config(self, state: KeyState) -> tuple[float, float, float]:
        """Effective (latency_ms, jitter_ms, chunk_delay_ms) for a key."""
        c = state.config
        return (
            self.latency_ms if c.latency_ms is None else c.latency_ms,
            self.jitter_ms if c.jitter_ms is None else c.jitter_ms,
            self.chunk_delay_ms if c.chunk_delay_ms is None else c.chunk_delay_ms,
        )

    def release_holds(self) -> None:
        """End every request held by a ``timeout`` fault now (called on server shutdown)."""
        self.holds.release_all()

    # -- admission ----------------------------------------------------------------------------

    def decide(
        self,
        state: KeyState,
        tokens: int,
        limited: bool = True,
        headers: HeaderFn | None = None,
    ) -> Decision:
        """Admission under the lock; ``headers`` picks the wire format's rate-limit headers."""
        with self._lock:
            return decide(state, tokens, self.clock(), self._fault_rng, limited, headers)

    def rate_headers(self, state: KeyState, headers: HeaderFn | None = None) -> Headers:
        with self._lock:
            now = self.clock()
            return state.rate_headers(now) if headers is None else headers(state, now)

    @property
    def unknown_stats(self) -> KeyStats:
        return self._unknown

    # -- statistics ---------------------------------------------------------------------------

    def stats(self) -> dict[str, KeyStats]:
        """Snapshot of the counters per label (``UNKNOWN_LABEL`` once an unknown key was used)."""
        with self._lock:
            out = {label: state.stats.copy() for label, state in self._by_label.items()}
            if self._unknown.received:
                out[UNKNOWN_LABEL] = self._unknown.copy()
            return out

    def key_stats(self, key_or_label: str) -> KeyStats:
        if key_or_label == UNKNOWN_LABEL:
            return self._unknown.copy()
        with self._lock:
            return self._state(key_or_label).stats.copy()

    def admission_times(self, key_or_label: str) -> list[float]:
        """Clock readings at which requests on this key were admitted (bounded history)."""
        with self._lock:
            return list(self._state(key_or_label).admissions)

    def max_admitted_in_window(self, key_or_label: str, window_s: float = 60.0) -> int:
        """Most requests this key admitted within any window ``[t, t + window_s)``.

        Note the token-bucket bound: with limit L per 60 s, a window of W seconds can admit up
        to ``L + L * W / 60`` (a full bucket plus the refill during the window), i.e. 2 L per
        60 s window when a client hammers the key; a client that paces itself stays at L.
        """
        return max_in_window(self.admission_times(key_or_label), window_s)

    def reset(self, *, stats_only: bool = False) -> None:
        """Clear statistics; unless ``stats_only``, also restore the keys given at construction
        (fresh buckets and quotas, their configured faults) and reseed the RNGs."""
        with self._lock:
            self._unknown = KeyStats()
            for state in self._by_key.values():
                state.stats = KeyStats()
                state.admissions.clear()
            if stats_only:
                return
            self._by_key.clear()
            self._by_label.clear()
            self._fault_rng.seed(self._seed)
            self._jitter_rng.seed(self._seed + 1)
        for config in self._initial:
            self.add_key(config)
        self.holds.open()


def _as_config(config: SimKeyConfig | str) -> SimKeyConfig:
    return config if isinstance(config, SimKeyConfig) else SimKeyConfig.parse(config)
