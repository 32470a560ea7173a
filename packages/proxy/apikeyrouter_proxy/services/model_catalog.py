"""What ``GET /v1/models`` answers: the models the proxy can actually serve right now.

A provider's configured ``models`` list is authoritative; a provider that accepts any model name
is asked once (with one of its own keys) and the answer cached, since model lists change rarely
and clients such as IDE plugins poll this endpoint. Providers without keys serve nothing and
are left out. The serialized answer is cached until providers or keys change.
"""

from __future__ import annotations

import time

import orjson
from apikeyrouter.domain.models.api_key import ROUTABLE_STATES
from apikeyrouter.domain.models.outcome import ProviderFailure
from apikeyrouter_proxy.services.router_service import ProviderEntry, RouterService

LIST_TIMEOUT_SECONDS = 10.0
GROUP_OWNER = "model-group"


class ModelCatalog:
    def __init__(self, service: RouterService, ttl_seconds: float = 300.0) -> None:
        self._service = service
        self._ttl = ttl_seconds
        self._upstream: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._payload: tuple[int, float, bytes, dict[str, str]] | None = None

    async def _provider_models(self, provider_id: str, entry: ProviderEntry) -> tuple[str, ...]:
        router = self._service.router
        keys = router.keys.list_keys(provider_id)
        if not keys:
            return ()
        if entry.config.models is not None:
            return entry.config.models
        if all(k.models is not None for k in keys):
            return tuple(sorted({m for k in keys for m in (k.models or ())}))
        cached = self._upstream.get(provider_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        usable = [k for k in keys if k.state in ROUTABLE_STATES] or keys
        listed = await entry.adapter.list_models(
            router.keys.secret(usable[0]), LIST_TIMEOUT_SECONDS
        )
        models = () if isinstance(listed, ProviderFailure) else tuple(listed)
        if not isinstance(listed, ProviderFailure):
            self._upstream[provider_id] = (now, models)
        return models

    async def owners(self) -> dict[str, str]:
        """model id -> the first provider (in registration order) that serves it; model groups
        with at least one servable member are listed as owned by ``model-group``."""
        found: dict[str, str] = {}
        for provider_id, entry in self._service.providers().items():
            for model in await self._provider_models(provider_id, entry):
                found.setdefault(model, provider_id)
        for group in self._service.router.planner.groups():
            if any(member.model in found for member in group.members):
                found.setdefault(group.name, GROUP_OWNER)
        return found

    async def payload(self) -> tuple[bytes, dict[str, str]]:
        """The OpenAI-format list (serialized) and the owners map it was built from."""
        generation = self._service.generation
        now = time.monotonic()
        cached = self._payload
        if cached is not None and cached[0] == generation and now - cached[1] < self._ttl:
            return cached[2], cached[3]
        owners = await self.owners()
        body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": model, "object": "model", "created": 0, "owned_by": provider}
                    for model, provider in owners.items()
                ],
            }
        )
        self._payload = (generation, now, body, owners)
        return body, owners
