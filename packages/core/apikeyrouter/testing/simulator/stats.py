"""Per-key counters and admission history.

Benchmarks and integration tests assert on what the *provider* saw, not on what the router
believes it did: how many requests reached each key, how many were turned away and why, and
whether any sliding window ever admitted more than the key's limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["KeyStats", "max_in_window"]


@dataclass(slots=True)
class KeyStats:
    """Counters for one key label (or for unknown keys).

    ``received``: every request that named this key; ``admitted``: passed the limiter and
    charged the buckets; ``served``: a complete 200 answer was sent. The ``status_*`` fields
    count answers by status (``status_4xx`` is every other 4xx: bad requests, unknown models),
    except that ``status_401`` counts every refused credential whatever status the wire format
    uses for it (Gemini answers a bad key with 400, a missing one with 403). ``held`` counts
    requests hit by a ``timeout`` fault, ``dropped`` cut connections, ``stream_errors`` streams
    ended by an in-band error event. ``key_in_url`` counts Gemini requests that sent the key as
    a ``?key=`` query parameter: it works, but URLs end up in logs, so a router must never do it.
    """

    received: int = 0
    admitted: int = 0
    served: int = 0
    status_429: int = 0
    status_401: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    held: int = 0
    dropped: int = 0
    stream_errors: int = 0
    key_in_url: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count_status(self, status: int) -> None:
        if status == 429:
            self.status_429 += 1
        elif status == 401:
            self.status_401 += 1
        elif status >= 500:
            self.status_5xx += 1
        elif status >= 400:
            self.status_4xx += 1

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def copy(self) -> KeyStats:
        return KeyStats(**asdict(self))


def max_in_window(timestamps: Sequence[float], window_s: float) -> int:
    """Largest number of timestamps inside any half-open window ``[t, t + window_s)``.

    Two pointers over the sorted times: O(n). Half-open because a token bucket that admitted a
    burst at t=0 legitimately admits again exactly ``period / limit`` seconds later.
    """
    times = sorted(timestamps)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best
