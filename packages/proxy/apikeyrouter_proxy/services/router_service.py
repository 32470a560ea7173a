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
    groups_set: list[str] = field(default_factory=list)
    groups_removed: list[str] = field(default_factory=list)

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
    ) -> None:
        options: dict[str, Any] = {}
        if config.routing.objective is not None:
            options["objective"] = config.routing.objective
        self.router = ApiKeyRouter(
            store,
            retry_policy=config.routing.retry_policy(),
            circuit_policy=config.circuit.policy(),
            clock=clock,
            **options,
        )
        #: What an omitted ``routing.objective`` means (the library's own default).
        self._default_objective = self.router.engine.default_objective
        self._transport: HttpTransport = transport if transport is not None else AiohttpTransport()
        self._tracing = tracing
        self._providers: dict[str, ProviderEntry] = {}
        self._managed: dict[str, ManagedKey] = {}
        self._derived_ids: dict[tuple[str, bytes], str] = {}
        self._salt = secrets.token_bytes(32)
        self._groups: dict[str, ModelGroupConfig] = {}
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
            derived = new_key_id()
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
                if key_id not in self._managed and self._exists(key_id):
                    raise ConfigurationError(
                        f"key id {key_id!r} is already used by a key added through the API",
                        param="providers",
                    )
                desired[key_id] = (provider, key, digest)
        return desired

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
        for group in config.model_groups:  # validated by the core before anything changes
            ModelGroup.model_validate(
                {"name": group.name, "members": list(group.members), "strategy": group.strategy}
            )
        # Nothing has changed yet; from here on every step is a plain registration or update.
        router = self.router
        router.failures.retry = config.routing.retry_policy()
        router.failures.circuit = config.circuit.policy()
        router.engine.default_objective = config.routing.objective or self._default_objective
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
        for key_id, (provider, key, digest) in desired.items():
            await self._reconcile_key(key_id, provider, key, digest, report)
        self._apply_groups(config.model_groups, report)
        self.generation += 1
        return report

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
        if managed is None or not self._exists(key_id):
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
