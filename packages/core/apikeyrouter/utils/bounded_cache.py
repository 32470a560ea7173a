"""One eviction rule for the small per-process caches on the request path."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` and return it; a cache already holding ``limit`` entries is
    emptied first.

    These caches are keyed by caller-chosen names (models, tokens) and hold values that are cheap
    to compute again, so what matters is the bound; starting over when it is reached is simpler
    than tracking recency and costs nothing on a hit.
    """
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
