"""The core router, owned by the proxy: built from config and kept in step with it on reload.

Reconciling is diff-based so a reload disturbs nothing that did not change: keys keep their ids,
their state (a throttled key stays throttled) and their usage windows; only what the file
changed is registered, updated, rotated or revoked. Keys added through the management API are
never touched by a reload. Everything that can fail (unknown adapter kinds, id clashes) is
checked before the first change, so a bad reload leaves the running state as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from apikeyrouter import APIKey, ApiKeyRouter, KeyLimits
from apikeyrouter.domain.interfaces.provider_adapter import ProviderAdapter
from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.domain.models.api_key import StateTransition, new_key_id
from apikeyrouter.infrastructure.transport.aiohttp_transport import AiohttpTransport
from apikeyrouter.infrastructure.transport.base import HttpTransport
from apikeyrouter.orchestration.planner import ModelGroup
from apikeyrouter.utils.exceptions import (
    ConfigurationError,
    InvalidRequestError,
    KeyNotFoundError,
)
from apikeyrouter_proxy.config.schema import KeyConfig, ModelGroupConfig, ProviderConfig
from apikeyrouter_proxy.config.settings import ProxyConfig
from apikeyrouter_proxy.observability.tracing import Tracing, TracingAdapter
from apikeyrouter_proxy.services.adapters import build_adapter
from apikeyrouter_proxy.services.governance import Governance

SOURCE_CONFIG = "config"
SOURCE_API = "api"


@dataclass(slots=True)
class ProviderEntry:
    """A registered provider: its settings (without keys), adapter and where it came from."""

    config: ProviderConfig
    adapter: ProviderAdapter
    source: str


@dataclass(slots=True)
class ManagedKey:
    """A key the config file owns: what was applied last, to diff the next file against."""

    provider_id: str
    digest: bytes
    config: KeyConfig


@dataclass(slots=True)
class ReloadReport:
    providers_added: list[str] = field(default_factory=list)
    providers_updated: list[str] = field(default_factory=list)
    providers_removed: list[str] = field(default_factory=list)
    keys_added: list[str] = field(default_factory=list)
    keys_updated: list[str] = field(default_factory=list)
    keys_rotated: list[str] = field(default_factory=list)
    keys_revoked: list[str] = field(default_factory=list)
    #: Config keys a shared store already held (another replica, or an earlier run of this
    #: one, registered them): taken over as they are, state and usage included.
    keys_adopted: list[str] = field(default_factory=list)
    groups_set: list[str] = field(default_factory=list)
    groups_removed: list[str] = field(default_factory=list)
    policies_set: list[str] = field(default_factory=list)
    policies_removed: list[str] = field(default_factory=list)
    budgets_set: list[str] = field(default_factory=list)
    budgets_removed: list[str] = field(default_factory=list)
    #: Models whose price changed (an override added, changed or dropped).
    pricing_models: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(value) for name, value in asdict(self).items()}


def _provider_shape(config: ProviderConfig) -> ProviderConfig:
    """The provider's settings without its keys: what decides whether the adapter changes."""
    return config.model_copy(update={"keys": ()})


def _key_options(config: KeyConfig) -> dict[str, Any]:
    return {
        "limits": config.limits(),
        "weight": config.weight,
        "tags": config.tags,
        "models": config.models,
    }


class RouterService:
    """Wraps :class:`ApiKeyRouter` with config-driven registration and reconciliation."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        store: StateStore | None = None,
        transport: HttpTransport | None = None,
        tracing: Tracing | None = None,
        clock: Callable[[], float] = time.time,
        master_key: str | None = None,
        stable_key_ids: bool = False,
    ) -> None:
        """``master_key`` encrypts key material at rest (None: the library's default, the
        environment or an ephemeral key). ``stable_key_ids``: config keys without an explicit
        id get one derived from the master key, the provider and the secret, so every replica
        and every restart on a shared store arrives at the same id (and adopts the stored key
        instead of registering a duplicate); requires ``master_key``."""
        if stable_key_ids and master_key is None:
            raise ConfigurationError("stable key ids need a master key", param="store.kind")
        options: dict[str, Any] = {}
        if config.routing.objective is not None:
            options["objective"] = config.routing.objective
        self.router = ApiKeyRouter(
            store,
            retry_policy=config.routing.retry_policy(),
            circuit_policy=config.circuit.policy(),
            clock=clock,
            master_key=master_key,
            scan_limit=config.routing.scan_limit,
            **options,
        )
        #: What an omitted ``routing.objective`` means (the library's own default).
        self._default_objective = self.router.engine.default_objective
        self._transport: HttpTransport = transport if transport is not None else AiohttpTransport()
        self._tracing = tracing
        self._providers: dict[str, ProviderEntry] = {}
        self._managed: dict[str, ManagedKey] = {}
        self._derived_ids: dict[tuple[str, bytes], str] = {}
        self._stable_ids = stable_key_ids
        self._salt = (
            hmac.new(master_key.encode(), b"apikeyrouter-proxy config key ids", "sha256").digest()
            if stable_key_ids and master_key is not None
            else secrets.token_bytes(32)
        )
        #: Until the first apply, stored config keys the file no longer lists are revoked.
        self._first_apply = True
        self._groups: dict[str, ModelGroupConfig] = {}
        #: Policies, budgets and price overrides (config-owned and API-owned).
        self.governance = Governance(self.router)
        self._lock = asyncio.Lock()
        #: Bumped on every change to providers or keys, so caches know when to refresh.
        self.generation = 0

    # --- providers --------------------------------------------------------------------------
    def providers(self) -> dict[str, ProviderEntry]:
        return dict(self._providers)

    def provider(self, provider_id: str) -> ProviderEntry | None:
        return self._providers.get(provider_id)

    def _adapter(self, config: ProviderConfig) -> ProviderAdapter:
        adapter = build_adapter(config, self._transport)
        if self._tracing is not None:
            adapter = TracingAdapter(adapter, self._tracing.tracer, config.id)
        return adapter

    async def _register_provider(
        self, config: ProviderConfig, adapter: ProviderAdapter, source: str
    ) -> None:
        await self.router.register_provider(config.id, adapter, models=config.models)
        self._providers[config.id] = ProviderEntry(_provider_shape(config), adapter, source)
        self.generation += 1

    async def add_provider(self, config: ProviderConfig) -> ProviderEntry:
        """Register a provider from the management API (its keys, if any, are not owned by the
        config file)."""
        async with self._lock:
            if config.id in self._providers:
                raise InvalidRequestError(
                    f"provider {config.id!r} already exists", param="id", code="provider_exists"
                )
            await self._register_provider(config, self._adapter(config), SOURCE_API)
            for key in config.keys:
                await self.router.register_key(
                    key.key.get_secret_value(),
                    config.id,
                    metadata={"source": SOURCE_API},
                    key_id=key.id,
                    **_key_options(key),
                )
            return self._providers[config.id]

    # --- keys -------------------------------------------------------------------------------
    async def add_key(
        self, material: str, provider_id: str, options: dict[str, Any], metadata: dict[str, Any]
    ) -> APIKey:
        async with self._lock:
            key = await self.router.register_key(
                material, provider_id, metadata={**metadata, "source": SOURCE_API}, **options
            )
            self.generation += 1
            return key

    def key_source(self, key: APIKey) -> str:
        return str(key.metadata.get("source", SOURCE_API))

    def _digest(self, material: str) -> bytes:
        return hmac.new(self._salt, material.encode(), hashlib.sha256).digest()

    def _key_id_for(self, provider_id: str, config: KeyConfig, digest: bytes) -> str:
        """Explicit ids win; otherwise the same secret under the same provider keeps its id."""
        if config.id is not None:
            return config.id
        derived = self._derived_ids.get((provider_id, digest))
        if derived is None:
            derived = (
                # The digest is keyed by the master key, so this id reveals nothing of it.
                "key_" + hashlib.sha256(digest + provider_id.encode()).hexdigest()[:16]
                if self._stable_ids
                else new_key_id()
            )
            self._derived_ids[(provider_id, digest)] = derived
        return derived

    # --- reconciliation ---------------------------------------------------------------------
    async def apply(self, config: ProxyConfig) -> ReloadReport:
        """Bring providers, keys and routing policies in line with ``config``."""
        async with self._lock:
            return await self._apply(config)

    def _plan_providers(
        self, config: ProxyConfig
    ) -> tuple[dict[str, ProviderAdapter], list[str], list[str]]:
        """Adapters to (re)register, built up front so an unknown kind fails before changes."""
        adapters: dict[str, ProviderAdapter] = {}
        added: list[str] = []
        updated: list[str] = []
        for provider in config.providers:
            entry = self._providers.get(provider.id)
            if entry is None:
                added.append(provider.id)
            elif entry.config != _provider_shape(provider):
                updated.append(provider.id)
            else:
                continue
            adapters[provider.id] = self._adapter(provider)
        return adapters, added, updated

    def _plan_keys(self, config: ProxyConfig) -> dict[str, tuple[ProviderConfig, KeyConfig, bytes]]:
        desired: dict[str, tuple[ProviderConfig, KeyConfig, bytes]] = {}
        for provider in config.providers:
            for key in provider.keys:
                digest = self._digest(key.key.get_secret_value())
                key_id = self._key_id_for(provider.id, key, digest)
                if key_id in desired:
                    raise ConfigurationError(f"key {key_id!r} appears twice", param="providers")
                if key_id not in self._managed and self._owned_elsewhere(key_id):
                    raise ConfigurationError(
                        f"key id {key_id!r} is already used by a key added through the API",
                        param="providers",
                    )
                desired[key_id] = (provider, key, digest)
        return desired

    def _owned_elsewhere(self, key_id: str) -> bool:
        """A key with this id exists and is not a config key (which would be adopted)."""
        existing = self.router.keys.find(key_id)
        return existing is not None and self.key_source(existing) != SOURCE_CONFIG

    def _exists(self, key_id: str) -> bool:
        try:
            self.router.keys.get(key_id)
        except KeyNotFoundError:
            return False
        return True

    async def _apply(self, config: ProxyConfig) -> ReloadReport:
        report = ReloadReport()
        adapters, report.providers_added, report.providers_updated = self._plan_providers(config)
        desired = self._plan_keys(config)
        governance = self.governance.plan(config)
        for group in config.model_groups:  # validated by the core before anything changes
            ModelGroup.model_validate(
                {"name": group.name, "members": list(group.members), "strategy": group.strategy}
            )
        # Nothing has changed yet; from here on every step is a plain registration or update.
        router = self.router
        router.failures.retry = config.routing.retry_policy()
        router.failures.circuit = config.circuit.policy()
        router.engine.default_objective = config.routing.objective or self._default_objective
        router.scan_limit = config.routing.scan_limit
        for provider in config.providers:
            if provider.id in adapters:
                await self._register_provider(provider, adapters[provider.id], SOURCE_CONFIG)
        wanted_providers = {p.id for p in config.providers}
        for provider_id, entry in list(self._providers.items()):
            if entry.source == SOURCE_CONFIG and provider_id not in wanted_providers:
                # The core cannot unregister a provider; with its config keys revoked below it
                # has no candidates, and the proxy stops listing it.
                del self._providers[provider_id]
                report.providers_removed.append(provider_id)
        for key_id in [k for k in self._managed if k not in desired]:
            await self._revoke(key_id)
            report.keys_revoked.append(key_id)
        if self._first_apply:
            # A shared store may hold config keys from an earlier file: it is the source of
            # truth for its keys, at start as on reload.
            for stored in self.router.keys.list_keys():
                if (
                    stored.id not in desired
                    and stored.id not in self._managed
                    and self.key_source(stored) == SOURCE_CONFIG
                ):
                    await self.router.keys.revoke(stored.id, actor=SOURCE_CONFIG)
                    report.keys_revoked.append(stored.id)
            self._first_apply = False
        for key_id, (provider, key, digest) in desired.items():
            await self._reconcile_key(key_id, provider, key, digest, report)
        self._apply_groups(config.model_groups, report)
        changes = self.governance.apply(governance)
        report.policies_set = changes.policies_set
        report.policies_removed = changes.policies_removed
        report.budgets_set = changes.budgets_set
        report.budgets_removed = changes.budgets_removed
        report.pricing_models = changes.pricing_models
        self.generation += 1
        return report

    # --- model groups through the API -------------------------------------------------------
    def group_source(self, name: str) -> str:
        return SOURCE_CONFIG if name in self._groups else SOURCE_API

    def set_group(self, name: str, members: Iterable[str | dict[str, Any]], strategy: str) -> None:
        """Create or replace a group (a config-owned one is put back by the next reload that
        changes it in the file)."""
        self.router.add_model_group(name, members, strategy)
        self.generation += 1

    def remove_group(self, name: str) -> bool:
        removed = self.router.remove_model_group(name)
        self.generation += 1
        return removed

    def _apply_groups(self, groups: tuple[ModelGroupConfig, ...], report: ReloadReport) -> None:
        wanted = {group.name: group for group in groups}
        for name in [n for n in self._groups if n not in wanted]:
            self.router.planner.remove_group(name)
            del self._groups[name]
            report.groups_removed.append(name)
        for name, group in wanted.items():
            if self._groups.get(name) != group:
                self.router.add_model_group(name, group.members, group.strategy)
                self._groups[name] = group
                report.groups_set.append(name)

    async def _revoke(self, key_id: str) -> None:
        self._managed.pop(key_id, None)
        if self._exists(key_id):
            await self.router.keys.revoke(key_id, actor=SOURCE_CONFIG)

    async def _reconcile_key(
        self,
        key_id: str,
        provider: ProviderConfig,
        key: KeyConfig,
        digest: bytes,
        report: ReloadReport,
    ) -> None:
        managed = self._managed.get(key_id)
        material = key.key.get_secret_value()
        if managed is not None and managed.provider_id != provider.id:
            await self._revoke(key_id)
            managed = None
        existing = self.router.keys.find(key_id) if managed is None else None
        if existing is not None:
            await self._adopt(existing, provider, key, report)
        elif managed is None or not self._exists(key_id):
            await self.router.register_key(
                material,
                provider.id,
                metadata={"source": SOURCE_CONFIG},
                key_id=key_id,
                **_key_options(key),
            )
            report.keys_added.append(key_id)
        else:
            if managed.digest != digest:
                await self.router.keys.rotate(key_id, material, actor=SOURCE_CONFIG)
                report.keys_rotated.append(key_id)
            if managed.config.model_copy(update={"key": key.key}) != key:
                await self._update_key(key_id, key)
                report.keys_updated.append(key_id)
        self._managed[key_id] = ManagedKey(provider.id, digest, key)

    async def _adopt(
        self, existing: APIKey, provider: ProviderConfig, key: KeyConfig, report: ReloadReport
    ) -> None:
        """Take over a config key the shared store already has: same id, same key. Only what
        the file changed is written, so its state, cooldown and usage stay as they are."""
        material = key.key.get_secret_value()
        if existing.provider_id != provider.id:
            await self.router.keys.revoke(existing.id, actor=SOURCE_CONFIG)
            await self.router.register_key(
                material,
                provider.id,
                metadata={"source": SOURCE_CONFIG},
                key_id=existing.id,
                **_key_options(key),
            )
            report.keys_added.append(existing.id)
            return
        changed = False
        if not self._same_secret(existing, material):
            await self.router.keys.rotate(existing.id, material, actor=SOURCE_CONFIG)
            report.keys_rotated.append(existing.id)
            changed = True
        models = frozenset(key.models) if key.models is not None else None
        if (existing.limits, existing.weight, existing.tags, existing.models) != (
            key.limits(),
            key.weight,
            frozenset(key.tags),
            models,
        ):
            await self._update_key(existing.id, key)
            report.keys_updated.append(existing.id)
            changed = True
        if not changed:
            report.keys_adopted.append(existing.id)

    def _same_secret(self, existing: APIKey, material: str) -> bool:
        try:
            stored = self.router.keys.secret(existing)
            return hmac.compare_digest(stored.encode(), material.encode())
        except ConfigurationError:  # sealed with another master key: re-encrypt (rotate)
            return False

    async def _update_key(self, key_id: str, key: KeyConfig) -> None:
        await self.update_key(
            key_id,
            limits=key.limits(),
            weight=key.weight,
            tags=key.tags,
            models=key.models,
            clear_models=key.models is None,
        )

    async def update_key(
        self,
        key_id: str,
        *,
        limits: KeyLimits | None = None,
        weight: float | None = None,
        tags: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        clear_models: bool = False,
    ) -> APIKey:
        """Change a key's settings; ``None`` leaves a setting alone, ``clear_models`` lifts a
        model restriction (which ``KeyManager.update`` cannot express)."""
        record = await self.router.keys.update(
            key_id, limits=limits, weight=weight, tags=tags, models=models
        )
        if clear_models and record.models is not None:
            record.models = None
            await self.router.store.put_key(record)
        self.generation += 1
        return record

    def has_key(self, key_id: str) -> bool:
        return self._exists(key_id)

    async def revoke_key(self, key_id: str) -> StateTransition:
        """Revoke through the API. A key the config file owns comes back with the next reload
        that lists it: the file is the source of truth for its keys."""
        transition = await self.router.keys.revoke(key_id, actor="operator")
        self.generation += 1
        return transition

    async def close(self) -> None:
        await self.router.close()
        await self._transport.close()
