"""Per-key gauges for ``/metrics`` (state, remaining quota, quota size), built for large pools.

They are read from the router when ``/metrics`` is scraped, not tracked per request. With ten
thousand keys, prometheus-client's labelled gauges (a validated child per series) and its
generic writer took 1.7 s per scrape with the event loop blocked, and every key's windows cost
a store read of their own. Here every key's windows come from one store read (one pipelined
round trip per thousand keys on Redis) and the samples are written straight to exposition text,
byte for byte as prometheus-client writes them (tested), with each key's escaped labels cached.
Labels carry key *ids*, which are random and safe; never key material.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from apikeyrouter import APIKey, ApiKeyRouter, KeyState
from apikeyrouter.domain.models.quota_state import QuotaState
from apikeyrouter.utils.bounded_cache import remember
from prometheus_client.utils import floatToGoString

STATE = "apikeyrouter_key_state"
REMAINING = "apikeyrouter_key_quota_remaining"
LIMIT = "apikeyrouter_key_quota_limit"
_HELP = {
    STATE: "1 for each key's current state (0 for the others), by key id.",
    REMAINING: "Quota left in each configured limit window of a key, by key id.",
    LIMIT: "Configured size of each limit window of a key, by key id.",
}
_WINDOW_NAMES = {60.0: "minute", 86_400.0: "day", 30 * 86_400.0: "month"}
_STATES = tuple(KeyState)
_ONE, _ZERO = "1.0", "0.0"  # as prometheus-client writes them
_MAX_CACHED_LABELS = 100_000
#: Keys read and written between two turns of the event loop (one store read each).
KEYS_PER_CHUNK = 500


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(name: str) -> str:
    doc = _HELP[name].replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} gauge\n"


def _number(value: float) -> str:
    return floatToGoString(value)  # type: ignore[no-untyped-call,no-any-return]


def window_name(window_seconds: float) -> str:
    return _WINDOW_NAMES.get(window_seconds, f"{window_seconds:g}s")


class KeyGauges:
    """Writes the three per-key families; one instance per app (it caches escaped labels)."""

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}

    def _key_labels(self, key_id: str, provider_id: str) -> tuple[str, str]:
        """``key_id="…"`` and ``provider="…"`` for one key, escaped once. Two parts, because
        prometheus-client writes labels in name order and ``metric`` falls between them."""
        cached = self._labels.get((key_id, provider_id))
        if cached is None:
            cached = (
                f'key_id="{escape_label_value(key_id)}"',
                f'provider="{escape_label_value(provider_id)}"',
            )
            remember(self._labels, (key_id, provider_id), cached, _MAX_CACHED_LABELS)
        return cached

    async def render(self, router: ApiKeyRouter) -> bytes:
        """The three families for every key the router holds, as exposition text.

        Keys are read a chunk at a time, handing the event loop back between chunks, so a
        scrape over a huge pool never holds up requests for more than one chunk's work."""
        keys = router.keys.list_keys()
        states: list[str] = [_header(STATE)]
        remaining: list[str] = [_header(REMAINING)]
        limits: list[str] = [_header(LIMIT)]
        for start in range(0, len(keys), KEYS_PER_CHUNK):
            if start:
                await asyncio.sleep(0)  # a turn for the requests waiting
            # A key revoked during that turn is left out (no await from here to the read).
            chunk = [k for k in keys[start : start + KEYS_PER_CHUNK] if router.keys.find(k.id)]
            quotas = await router.quota_states(key.id for key in chunk)
            self._write(chunk, quotas, states, remaining, limits)
        return _joined((states, remaining, limits))

    def _write(
        self,
        keys: list[APIKey],
        quotas: list[QuotaState],
        states: list[str],
        remaining: list[str],
        limits: list[str],
    ) -> None:
        for key, quota in zip(keys, quotas, strict=True):
            key_label, provider_label = self._key_labels(key.id, key.provider_id)
            prefix = f"{STATE}{{{key_label},{provider_label},state="
            current = key.state
            states.extend(
                f'{prefix}"{state.value}"}} {_ONE if state is current else _ZERO}\n'
                for state in _STATES
            )
            for window in quota.windows:
                series = (
                    f'{{{key_label},metric="{escape_label_value(window.metric)}",'
                    f'{provider_label},window="{window_name(window.window_seconds)}"}}'
                )
                remaining.append(f"{REMAINING}{series} {_number(window.remaining)}\n")
                limits.append(f"{LIMIT}{series} {_number(window.limit)}\n")


def _joined(families: Iterable[list[str]]) -> bytes:
    return "".join(line for family in families for line in family).encode()
