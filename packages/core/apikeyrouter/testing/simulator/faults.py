"""Failure injection: what can go wrong with a key, how often, and for how many requests.

A router is only as good as its behaviour when upstream misbehaves, so the simulator can make a
key answer 429/401/500/503, hang (``timeout``), cut a response short (``drop_stream``) or end a
stream with an in-band error event after a 200 (``stream_error``). Faults
are armed per key, consumed in order, and can fire with a probability drawn from the provider's
seeded RNG so a flaky key is reproducible run after run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ._coerce import as_float, as_int

__all__ = ["Fault", "FaultMode", "FaultSet", "parse_fault_spec"]


class FaultMode(StrEnum):
    """The kinds of failure the simulator can inject."""

    STATUS_429 = "status_429"
    STATUS_401 = "status_401"
    STATUS_500 = "status_500"
    STATUS_503 = "status_503"
    TIMEOUT = "timeout"
    DROP_STREAM = "drop_stream"
    STREAM_ERROR = "stream_error"

    @property
    def before_admission(self) -> bool:
        """Status faults answer instead of the limiter; hangs and drops hit admitted requests.

        An injected error costs the key no capacity (the upstream refused it outright), while a
        hang, a dropped stream or a stream error happens to a request the upstream accepted and
        charged for.
        """
        return self not in (FaultMode.TIMEOUT, FaultMode.DROP_STREAM, FaultMode.STREAM_ERROR)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure rule.

    ``count`` is how many upcoming requests on the key get it (-1 = every request until
    cleared); ``probability`` makes each of those a coin flip (a miss does not use up a count).
    ``timeout_s`` is how long a ``timeout`` holds the request before answering normally,
    ``after_chunks`` how many SSE chunks a ``drop_stream`` sends before cutting the connection
    (or a ``stream_error`` before its error event; a request that is not streamed gets the
    format's overload error instead), and ``retry_after_s`` the retry hint an injected 429
    advertises.
    """

    mode: FaultMode
    count: int = -1
    probability: float = 1.0
    timeout_s: float = 30.0
    after_chunks: int = 1
    retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        # Accept the plain string form ("status_500") from JSON, CLI and callers alike.
        object.__setattr__(self, "mode", FaultMode(self.mode))
        if self.count == 0 or self.count < -1:
            raise ValueError("fault count must be positive or -1 (forever)")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError("fault probability must be in (0, 1]")
        if self.timeout_s < 0 or self.retry_after_s < 0 or self.after_chunks < 0:
            raise ValueError("fault durations and after_chunks must not be negative")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Fault:
        """Build from a JSON/YAML object; unknown fields are an error, not silently ignored."""
        allowed = {"mode", "count", "probability", "timeout_s", "after_chunks", "retry_after_s"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if "mode" not in data:
            raise ValueError("a fault needs a 'mode'")
        return cls(
            mode=FaultMode(str(data["mode"])),
            count=as_int(data.get("count", -1), "count"),
            probability=as_float(data.get("probability", 1.0), "probability"),
            timeout_s=as_float(data.get("timeout_s", 30.0), "timeout_s"),
            after_chunks=as_int(data.get("after_chunks", 1), "after_chunks"),
            retry_after_s=as_float(data.get("retry_after_s", 1.0), "retry_after_s"),
        )


def parse_fault_spec(spec: str) -> Fault:
    """Parse the compact CLI form ``MODE[:COUNT[:PROBABILITY]]``, e.g. ``status_500:3:0.5``."""
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"bad fault spec {spec!r}; expected MODE[:COUNT[:PROBABILITY]]")
    count = as_int(parts[1], "count") if len(parts) > 1 else -1
    probability = as_float(parts[2], "probability") if len(parts) > 2 else 1.0
    return Fault(mode=FaultMode(parts[0]), count=count, probability=probability)


@dataclass(slots=True)
class _Armed:
    fault: Fault
    remaining: int


@dataclass(slots=True)
class FaultSet:
    """The faults armed on one key, consumed in the order they were added.

    Not thread-safe by itself: the provider calls it under its lock.
    """

    _armed: list[_Armed] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self._armed)

    def __len__(self) -> int:
        return len(self._armed)

    def add(self, fault: Fault) -> None:
        self._armed.append(_Armed(fault, fault.count))

    def clear(self) -> None:
        self._armed.clear()

    def pending(self) -> list[tuple[Fault, int]]:
        """The armed faults and how many requests each still applies to (-1 = forever)."""
        return [(armed.fault, armed.remaining) for armed in self._armed]

    def pick(self, before_admission: bool, rng: random.Random) -> Fault | None:
        """Return the first fault of the given phase that fires for this request, using it up."""
        for index, armed in enumerate(self._armed):
            fault = armed.fault
            if fault.mode.before_admission is not before_admission:
                continue
            if fault.probability < 1.0 and rng.random() >= fault.probability:
                continue
            if armed.remaining > 0:
                armed.remaining -= 1
                if armed.remaining == 0:
                    del self._armed[index]
            return fault
        return None
