"""The sections of the proxy's configuration: what a YAML file (plus environment) may say.

Every section forbids unknown fields, so a typo becomes an error with a line number instead of a
silently ignored setting. Secrets are ``SecretStr``: they never appear in a repr, a log line or
an error message. The root model lives in :mod:`.settings` (it also reads the environment).
"""

from __future__ import annotations

from typing import Any, Literal

from apikeyrouter import KeyLimits, RetryPolicy, RoutingObjective
from apikeyrouter.domain.interfaces.state_store import CircuitPolicy
from apikeyrouter.infrastructure.adapters.generic_http_adapter import OPENAI_COMPATIBLE_PRESETS
from apikeyrouter.orchestration.selector import DEFAULT_SCAN_LIMIT
from apikeyrouter.utils.duplicates import repeated
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

#: Ids end up in URLs, metric labels and log lines: keep them to a safe, boring alphabet.
IDENT_PATTERN = r"^[A-Za-z0-9_.:-]+$"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

#: Every adapter kind of the core's registry (``apikeyrouter...adapters.registry``).
ProviderKind = Literal[
    "openai", "openai_compatible", "azure_openai", "anthropic", "gemini", "generic"
]
#: Kinds whose endpoint cannot be guessed: ``base_url`` is required.
_URL_REQUIRED = frozenset({"azure_openai", "generic"})

#: Where each provider kind lives when ``base_url`` is not given.
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for /api/v1; without one the API is disabled."
    )
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    watch_config: bool = Field(default=True, description="Reload the file when it changes.")
    gc_threshold: int = Field(
        default=10_000,
        ge=0,
        description=(
            "Young-generation threshold of Python's garbage collector in a process the CLI "
            "runs (CPython's default is 700); start-up objects are also frozen out of later "
            "collections. 0 keeps CPython's defaults. Measured at about 8% of the proxy's CPU "
            "under load with the defaults."
        ),
    )


class ClientConfig(Section):
    """A caller of ``/v1``: its id (logged, passed to routing) and its secret key."""

    id: str = Field(min_length=1, max_length=64, pattern=IDENT_PATTERN)
    key: SecretStr
    requests_per_minute: int | None = Field(default=None, gt=0)
    budget_usd_per_day: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="A hard client budget per UTC day."
    )
    budget_usd_per_month: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="A hard client budget per month."
    )

    @field_validator("key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().strip()) < 8:
            raise ValueError("client keys must be at least 8 characters")
        return value


class AuthConfig(Section):
    clients: tuple[ClientConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        duplicates = repeated(client.id for client in self.clients)
        if duplicates:
            raise ValueError(f"duplicate client id(s): {', '.join(duplicates)}")
        secrets = [client.key.get_secret_value() for client in self.clients]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two clients share the same key")
        return self


class RoutingConfig(Section):
    objective: RoutingObjective | None = Field(
        default=None, description="Default routing objective; omitted means the library's default."
    )
    scan_limit: int | None = Field(
        default=DEFAULT_SCAN_LIMIT,
        ge=1,
        description=(
            "Routable keys a request gathers per provider before ranking; larger pools are "
            "scanned in turns, each request going on where the last stopped. null: every key."
        ),
    )
    max_attempts: int = Field(default=4, ge=1, le=50)
    deadline_seconds: float = Field(default=60.0, gt=0)
    attempt_timeout_seconds: float = Field(default=30.0, gt=0)
    max_wait_for_reset_seconds: float = Field(default=0.0, ge=0)
    backoff_base_seconds: float = Field(default=0.05, ge=0)
    backoff_max_seconds: float = Field(default=1.0, ge=0)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            deadline_seconds=self.deadline_seconds,
            attempt_timeout_seconds=self.attempt_timeout_seconds,
            max_wait_for_reset_seconds=self.max_wait_for_reset_seconds,
            backoff_base_seconds=self.backoff_base_seconds,
            backoff_max_seconds=self.backoff_max_seconds,
        )


class CircuitConfig(Section):
    failure_threshold: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=30.0, gt=0)

    def policy(self) -> CircuitPolicy:
        return CircuitPolicy(
            failure_threshold=self.failure_threshold, open_seconds=self.open_seconds
        )


class KeyConfig(Section):
    """One provider key. ``key`` should be ``${ENV_VAR}`` so the file itself holds no secret.

    Without ``id`` the proxy keeps the id stable across reloads for the same secret (within one
    process); give an explicit id to keep it stable across restarts too.
    """

    id: str | None = Field(default=None, min_length=1, max_length=128, pattern=IDENT_PATTERN)
    key: SecretStr
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    requests_per_day: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    spend_per_month: float | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)
    tags: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None

    @field_validator("key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the key is empty (is its environment variable set to ''?)")
        return value

    def limits(self) -> KeyLimits:
        return KeyLimits(
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            requests_per_day=self.requests_per_day,
            tokens_per_day=self.tokens_per_day,
            spend_per_month=self.spend_per_month,
        )


class ProviderConfig(Section):
    id: str = Field(min_length=1, max_length=64, pattern=IDENT_PATTERN)
    kind: ProviderKind = "openai"
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    models: tuple[str, ...] | None = Field(
        default=None, description="Models this provider serves; omitted means any model name."
    )
    model_map: dict[str, str] = Field(
        default_factory=dict, description="Logical model name -> the provider's own name."
    )
    keys: tuple[KeyConfig, ...] = ()
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Adapter options for this kind (checked per kind, see provider_options).",
    )

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderConfig:
        if self.base_url is None and self.kind in _URL_REQUIRED:
            raise ValueError(f"a provider of kind {self.kind!r} needs a base_url")
        if self.kind == "openai_compatible" and not (self.base_url or self.options.get("preset")):
            raise ValueError("an openai_compatible provider needs a base_url or options.preset")
        return self

    @property
    def effective_base_url(self) -> str:
        if self.base_url:
            return self.base_url
        preset = self.options.get("preset")
        if self.kind == "openai_compatible" and isinstance(preset, str):
            return OPENAI_COMPATIBLE_PRESETS.get(preset, "")
        return DEFAULT_BASE_URLS.get(self.kind, "")


class ModelGroupConfig(Section):
    """A logical model name served by several concrete ones, e.g. ``smart`` ->
    ``["openai/gpt-4o", "anthropic/claude-sonnet-4-5"]`` (tried in order, or by weight)."""

    name: str = Field(min_length=1, max_length=128)
    members: tuple[str, ...] = Field(min_length=1)
    strategy: Literal["ordered", "weighted"] = "ordered"


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    access_log: bool = Field(default=True, description="One JSON line per request.")
    access_log_flush_seconds: float = Field(
        default=0.1,
        ge=0.0,
        le=10.0,
        description=(
            "Access lines are written together at most this long after the first of them "
            "(one write per request costs about a tenth of the proxy's CPU under load); 0 "
            "writes each line at once. Waiting lines are written at shutdown."
        ),
    )
    router_events: bool = Field(
        default=False,
        description=(
            "Also log the core router's per-request 'routed' lines at INFO. Off by default: the "
            "access line carries the same facts (key, provider, attempts, failover outcomes) "
            "and rendering a second structured line per request costs measurable throughput."
        ),
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class TracingConfig(Section):
    enabled: bool = False
    exporter: Literal["console", "otlp"] = "console"
    service_name: str = "apikeyrouter-proxy"


StoreKind = Literal["memory", "redis", "mongo", "redis+mongo"]
#: Store kinds that keep key material outside the process, hence need a stable master key.
SHARED_STORE_KINDS: frozenset[str] = frozenset({"redis", "mongo", "redis+mongo"})


class RedisStoreConfig(Section):
    """Where the hot state lives. ``url`` may carry a password and a database number
    (``redis://:${REDIS_PASSWORD}@host:6379/2``) and ``rediss://`` means TLS; it is a secret,
    never printed."""

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    prefix: str = Field(
        default="apikeyrouter:",
        min_length=1,
        max_length=200,
        description="Every Redis key and channel starts with this: tenants can share a server.",
    )
    max_connections: int = Field(default=64, ge=1)
    op_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        description="One Redis call taking longer counts as Redis being unavailable.",
    )
    retry_after_seconds: float = Field(
        default=1.0, gt=0, description="While unavailable, how often Redis is probed."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("the Redis URL must start with redis://, rediss:// or unix://")
        return value


class MongoStoreConfig(Section):
    """Where the durable records live. ``url`` may carry credentials: a secret, never printed."""

    url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = Field(
        default="apikeyrouter", min_length=1, max_length=63, pattern=r"^[^/\\. \"$]+$"
    )
    decision_ttl_seconds: float = Field(
        default=7 * 86_400.0, gt=0, description="Routing decisions expire after this long."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("the MongoDB URL must start with mongodb:// or mongodb+srv://")
        return value


class UsageLedgerConfig(Section):
    """The per-request usage ledger (MongoDB only): written off the request path, in batches."""

    enabled: bool = True
    queue_size: int = Field(
        default=10_000, ge=1, description="Requests waiting to be written; beyond it, dropped."
    )
    batch_size: int = Field(default=1_000, ge=1, description="Requests per flush at most.")
    flush_seconds: float = Field(
        default=1.0, gt=0, description="How long a request may wait in the queue at most."
    )


class StoreConfig(Section):
    """Where keys, counters, cooldowns, circuits, audit trail and usage live.

    ``memory``: this process only (the default). ``redis``: shared by every replica (hot state
    and keys). ``mongo``: durable records and exact shared counters, but no change events (one
    replica, or replicas that may each rediscover a dead key). ``redis+mongo``: Redis for hot
    state and cross-replica events, MongoDB for the records that must survive. Every kind but
    ``memory`` needs ``APIKEYROUTER_MASTER_KEY`` (key material is encrypted at rest with it).
    Store settings need a restart.
    """

    kind: StoreKind = "memory"
    redis: RedisStoreConfig = Field(default_factory=RedisStoreConfig)
    mongo: MongoStoreConfig = Field(default_factory=MongoStoreConfig)
    on_redis_unavailable: Literal["open", "closed"] = Field(
        default="open",
        description=(
            "open: keep serving on this replica's own view (limits then hold per replica, not "
            "in total) and resync when Redis is back; closed: answer 503 with Retry-After."
        ),
    )
    usage_ledger: UsageLedgerConfig = Field(default_factory=UsageLedgerConfig)

    @property
    def uses_redis(self) -> bool:
        return self.kind in ("redis", "redis+mongo")

    @property
    def uses_mongo(self) -> bool:
        return self.kind in ("mongo", "redis+mongo")
