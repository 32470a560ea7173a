"""Build the state store the config's ``store:`` section asks for, and report its health.

=============  ==========================================================================
``memory``     :class:`InMemoryStateStore`: this process only (the default).
``redis``      :class:`RedisStateStore` inside a :class:`ResilientStateStore`: shared by
               every replica, which follow each other's key changes through its events;
               ``on_redis_unavailable`` picks fail-open or fail-closed during an outage.
``mongo``      :class:`MongoStateStore`: durable keys, audit, decisions, usage ledger,
               policies and budgets; exact shared counters; no change events.
``redis+mongo`` :class:`TieredStateStore` (Redis hot, MongoDB durable) inside a
               :class:`ResilientStateStore`. The wrapper bounds every call, MongoDB's
               write-through included, so MongoDB trouble is handled like Redis trouble.
=============  ==========================================================================

Client libraries are imported only for the kind configured: the proxy package does not depend
on ``redis`` or ``pymongo`` (they come with ``apikeyrouter-core[redis]`` / ``[mongo]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.domain.models.cost_model import Budget
from apikeyrouter.domain.models.policy import Policy
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.infrastructure.state_store.resilient_store import ResilientStateStore
from apikeyrouter_proxy.config.schema import StoreConfig

if TYPE_CHECKING:
    from apikeyrouter.infrastructure.state_store.mongo_store import MongoStateStore

__all__ = [
    "BuiltStore",
    "DurableRecords",
    "StoreHealth",
    "build_store",
    "describe_store",
    "redact_url",
    "store_health",
    "wrap_store",
]

HealthStatus = Literal["ok", "degraded", "unavailable"]


@runtime_checkable
class DurableRecords(Protocol):
    """What only a durable store keeps: the usage ledger, policies and budgets (MongoDB, alone
    or under the tiered store). The proxy's policy and budget management persists through
    ``runtime.durable``, which is None for stores without these records."""

    async def initialize(self) -> list[int]: ...

    async def record_usage(
        self,
        *,
        key_id: str,
        provider_id: str,
        model: str,
        client_id: str | None,
        day: str | date,
        requests: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None: ...

    async def save_policies(self, policies: Any) -> int: ...

    async def load_policies(self) -> list[Policy]: ...

    async def save_budget(self, budget: Budget) -> None: ...

    async def delete_budget(self, budget_id: str) -> bool: ...

    async def load_budgets(self) -> list[Budget]: ...


@dataclass(slots=True)
class BuiltStore:
    """The store the router uses, and handles on its parts the proxy needs directly."""

    kind: str
    store: StateStore
    #: The outage wrapper (``redis`` and ``redis+mongo``), for health and fail-open/closed.
    resilient: ResilientStateStore | None = None
    #: Ledger, policies and budgets (``mongo`` and ``redis+mongo``).
    durable: DurableRecords | None = None

    async def initialize(self) -> None:
        """Schema migrations (MongoDB) and warming the hot store from the durable one."""
        if self.durable is not None:
            await self.durable.initialize()


def _mongo(config: StoreConfig) -> MongoStateStore:
    from apikeyrouter.infrastructure.state_store.mongo_store import MongoStateStore

    return MongoStateStore(
        config.mongo.url.get_secret_value(),
        database=config.mongo.database,
        decision_ttl_seconds=config.mongo.decision_ttl_seconds,
    )


def _redis(config: StoreConfig) -> StateStore:
    from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore

    redis = config.redis
    return RedisStateStore(
        redis.url.get_secret_value(),
        prefix=redis.prefix,
        max_connections=redis.max_connections,
        # A request waits for a pooled connection no longer than one call may take.
        pool_timeout=redis.op_timeout_seconds,
    )


def _resilient(primary: StateStore, config: StoreConfig) -> ResilientStateStore:
    return ResilientStateStore(
        primary,
        mode=config.on_redis_unavailable,
        op_timeout_seconds=config.redis.op_timeout_seconds,
        retry_after_seconds=config.redis.retry_after_seconds,
    )


def build_store(config: StoreConfig) -> BuiltStore:
    """The store for ``config`` (nothing connects yet: clients connect on first use)."""
    if config.kind == "memory":
        return BuiltStore("memory", InMemoryStateStore())
    if config.kind == "redis":
        wrapper = _resilient(_redis(config), config)
        return BuiltStore("redis", wrapper, resilient=wrapper)
    if config.kind == "mongo":
        mongo = _mongo(config)
        return BuiltStore("mongo", mongo, durable=mongo)
    from apikeyrouter.infrastructure.state_store.tiered_store import TieredStateStore

    tiered = TieredStateStore(_redis(config), _mongo(config))
    wrapper = _resilient(tiered, config)
    return BuiltStore("redis+mongo", wrapper, resilient=wrapper, durable=tiered)


def wrap_store(store: StateStore) -> BuiltStore:
    """Describe a store built by the caller (``create_app(store=...)``): its parts are found
    by what it is, so an injected MongoDB store still gets the ledger and an injected wrapper
    still reports degraded."""
    resilient = store if isinstance(store, ResilientStateStore) else None
    inner = resilient.primary if resilient is not None else store
    return BuiltStore(
        type(store).__name__,
        store,
        resilient=resilient,
        durable=inner if isinstance(inner, DurableRecords) else None,
    )


def redact_url(url: str) -> str:
    """``scheme://host:port/path`` without credentials or query (for summaries and logs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def describe_store(config: StoreConfig) -> str:
    """One line for ``check-config``: the kind and where it lives, never a credential."""
    parts: list[str] = [config.kind]
    if config.uses_redis:
        parts.append(
            f"redis {redact_url(config.redis.url.get_secret_value())} "
            f"prefix {config.redis.prefix!r}, fail-{config.on_redis_unavailable}"
        )
    if config.uses_mongo:
        parts.append(
            f"mongodb {redact_url(config.mongo.url.get_secret_value())} "
            f"database {config.mongo.database!r}, usage ledger "
            f"{'on' if config.usage_ledger.enabled else 'off'}"
        )
    return ": ".join(parts[:1]) + (" (" + "; ".join(parts[1:]) + ")" if parts[1:] else "")


@dataclass(slots=True)
class StoreHealth:
    """``ok``; ``degraded`` (unreachable, serving on local state: fail-open); ``unavailable``
    (unreachable and refusing work, or a store without a fallback not answering)."""

    kind: str
    status: HealthStatus
    mode: str | None = None
    detail: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "status": self.status}
        if self.mode is not None:
            out["mode"] = self.mode
        if self.detail:
            out.update(self.detail)
        return out


async def store_health(kind: str, store: StateStore) -> StoreHealth:
    """Ask the store (bounded: the wrapper's op timeout; a bare store's own timeouts)."""
    if isinstance(store, ResilientStateStore):
        status = store.status()
        reachable = not store.is_degraded and await store.ping()
        detail = {
            "outages": status["outages"],
            "degraded_operations": status["degraded_operations"],
            "pending_resync": status["pending_resync"],
        }
        if reachable:
            return StoreHealth(kind, "ok", store.mode, detail)
        return StoreHealth(
            kind, "degraded" if store.mode == "open" else "unavailable", store.mode, detail
        )
    try:
        reachable = await store.ping()
    except Exception:
        reachable = False
    return StoreHealth(kind, "ok" if reachable else "unavailable")
