"""Who may call ``/v1``: client keys, compared in constant time, each with an optional limit.

Presented tokens are hashed once and compared against every client's hash with
``hmac.compare_digest`` without stopping at a match, so the time taken says nothing about which
client (if any) a guess was close to. Limiter state survives a config reload for a client whose
limit did not change, so editing the file is not a way to reset a throttled client.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from apikeyrouter_proxy.config.schema import ClientConfig
from apikeyrouter_proxy.services.rate_limit import SlidingWindowLimiter


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    digest: bytes
    limiter: SlidingWindowLimiter | None


class ClientRegistry:
    """The configured clients. ``enabled`` is False when none are configured (open ``/v1``)."""

    __slots__ = ("_clients", "enabled")

    def __init__(
        self,
        clients: Sequence[ClientConfig] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        previous: ClientRegistry | None = None,
    ) -> None:
        old = {c.id: c for c in previous._clients} if previous is not None else {}
        built: list[Client] = []
        for config in clients:
            limiter: SlidingWindowLimiter | None = None
            rpm = config.requests_per_minute
            if rpm is not None:
                kept = old.get(config.id)
                if kept is not None and kept.limiter is not None and kept.limiter.limit == rpm:
                    limiter = kept.limiter
                else:
                    limiter = SlidingWindowLimiter(rpm, 60.0, clock)
            secret = config.key.get_secret_value().encode()
            built.append(Client(config.id, _digest(secret), limiter))
        self._clients: tuple[Client, ...] = tuple(built)
        self.enabled = bool(built)

    def authenticate(self, token: bytes) -> Client | None:
        """The client whose key is ``token``, or None. Constant time in the token's content."""
        presented = _digest(token)
        found: Client | None = None
        for client in self._clients:
            if hmac.compare_digest(presented, client.digest):
                found = client
        return found

    def ids(self) -> list[str]:
        return [c.id for c in self._clients]
