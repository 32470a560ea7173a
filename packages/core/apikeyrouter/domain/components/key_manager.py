"""Key lifecycle: registration, lookup, state machine, revocation and rotation.

The manager keeps a local index of keys for the hot path (routing reads no store) and writes
every change through the state store, whose compare-and-set makes state changes atomic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.domain.models.api_key import (
    APIKey,
    KeyLimits,
    KeyState,
    StateTransition,
    can_transition,
)
from apikeyrouter.utils.encryption import KeyEncryptor
from apikeyrouter.utils.exceptions import (
    InvalidRequestError,
    InvalidStateTransitionError,
    KeyNotFoundError,
)
from apikeyrouter.utils.redaction import fingerprint


class _Unset:
    """Marker for "argument not given", where None is a meaningful value."""


UNSET = _Unset()
_STATE_FIELDS = ("state", "state_reason", "state_changed_at", "cooldown_until")


class KeyManager:
    def __init__(
        self,
        store: StateStore,
        encryptor: KeyEncryptor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._encryptor = encryptor or KeyEncryptor()
        self._clock = clock
        self._keys: dict[str, APIKey] = {}
        self._by_provider: dict[str, dict[str, APIKey]] = {}
        #: Each provider's keys as a sequence, rebuilt after a key joins or leaves: routing
        #: scans large pools from a rotating position, which needs indexed access.
        self._pools: dict[str, tuple[APIKey, ...]] = {}
        #: Called with a key's id once it is gone for good (revoked here, or deleted by another
        #: process), so what other components keep per key goes with it.
        self.removal_listeners: list[Callable[[str], None]] = []

    # --- registration and lookup ------------------------------------------------------------
    async def register_key(
        self,
        key_material: str,
        provider_id: str,
        *,
        limits: KeyLimits | None = None,
        weight: float = 1.0,
        tags: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
        models: Iterable[str] | None = None,
        key_id: str | None = None,
    ) -> APIKey:
        if not isinstance(key_material, str) or not key_material.strip():
            raise InvalidRequestError("key material must be a non-empty string", param="key")
        if key_id is not None and key_id in self._keys:
            raise InvalidRequestError(f"key id {key_id!r} is already registered", param="id")
        fields: dict[str, Any] = {
            "provider_id": provider_id,
            "encrypted_material": "",
            "fingerprint": fingerprint(key_material),
            "limits": limits or KeyLimits(),
            "weight": weight,
            "tags": frozenset(tags),
            "metadata": dict(metadata or {}),
            "models": frozenset(models) if models is not None else None,
            "created_at": self._clock(),
            "state_changed_at": self._clock(),
        }
        if key_id is not None:
            fields["id"] = key_id
        key = APIKey(**fields)
        key.encrypted_material = self._encryptor.encrypt(key_material, key.id)
        await self._store.put_key(key)
        self._index(key)
        return key

    def _index(self, key: APIKey) -> None:
        self._keys[key.id] = key
        self._by_provider.setdefault(key.provider_id, {})[key.id] = key
        self._pools.pop(key.provider_id, None)

    def _unindex(self, key_id: str) -> None:
        key = self._keys.pop(key_id, None)
        if key is not None:
            self._by_provider.get(key.provider_id, {}).pop(key_id, None)
            self._pools.pop(key.provider_id, None)

    def index(self, key: APIKey) -> None:
        """Track a key another process stored (no store write: it is already there)."""
        self._index(key)

    def forget(self, key_id: str) -> bool:
        """Stop tracking a key another process deleted (no store write)."""
        known = key_id in self._keys
        self._unindex(key_id)
        if known:
            self._removed(key_id)
        return known

    def move(self, key: APIKey, provider_id: str) -> None:
        """Re-file a tracked key under another provider (its record changed elsewhere)."""
        self._unindex(key.id)
        key.provider_id = provider_id
        self._index(key)

    def _removed(self, key_id: str) -> None:
        for listener in self.removal_listeners:
            listener(key_id)

    async def load(self) -> int:
        """Fill the local index from the store (keys registered by another process)."""
        keys = await self._store.list_keys()
        for key in keys:
            self._index(key)
        return len(keys)

    def get(self, key_id: str) -> APIKey:
        key = self._keys.get(key_id)
        if key is None:
            raise KeyNotFoundError(f"no key with id {key_id!r}", param="key_id")
        return key

    def find(self, key_id: str) -> APIKey | None:
        """Like :meth:`get`, for callers to whom a missing key is not an error."""
        return self._keys.get(key_id)

    def list_keys(self, provider_id: str | None = None) -> list[APIKey]:
        if provider_id is None:
            return list(self._keys.values())
        return list(self._by_provider.get(provider_id, {}).values())

    def list_redacted(self, provider_id: str | None = None) -> list[dict[str, Any]]:
        return [key.redacted() for key in self.list_keys(provider_id)]

    def keys_for_provider(self, provider_id: str) -> Sequence[APIKey]:
        """The provider's keys in registration order (the hot path's view: not a copy)."""
        pool = self._pools.get(provider_id)
        if pool is None:
            pool = self._pools[provider_id] = tuple(self._by_provider.get(provider_id, {}).values())
        return pool

    def secret(self, key: APIKey) -> str:
        """Decrypt key material; call only right before sending it upstream."""
        return self._encryptor.decrypt(key.encrypted_material, key.id)

    # --- state machine ----------------------------------------------------------------------
    async def set_state(
        self,
        key_id: str,
        target: KeyState,
        reason: str,
        *,
        actor: str = "router",
        cooldown_until: float | None = None,
        request_id: str | None = None,
        expected: KeyState | None = None,
    ) -> StateTransition | None:
        """Move a key along the state machine.

        Raises on a transition the machine forbids. With ``expected``, returns None (and changes
        nothing) when another actor moved the key first or removed it: the caller lost a race,
        not an error (an attempt that finishes after its key was revoked, say).
        """
        if expected is not None and key_id not in self._keys:
            return None
        key = self.get(key_id)
        current = key.state if expected is None else expected
        if not can_transition(current, target):
            raise InvalidStateTransitionError(
                f"key {key_id} cannot go from {current.value} to {target.value}", param="state"
            )
        transition = StateTransition(
            key_id=key_id,
            from_state=current,
            to_state=target,
            reason=reason,
            at=self._clock(),
            actor=actor,
            request_id=request_id,
        )
        changed = await self._store.compare_and_set_state(
            key_id, current, transition, cooldown_until
        )
        if not changed:
            if expected is not None:
                return None
            raise InvalidStateTransitionError(
                f"key {key_id} changed state concurrently; retry", param="state"
            )
        key.state = target
        key.state_reason = reason
        key.state_changed_at = transition.at
        key.cooldown_until = cooldown_until
        return transition

    async def update(
        self,
        key_id: str,
        *,
        limits: KeyLimits | None = None,
        weight: float | None = None,
        tags: Iterable[str] | None = None,
        metadata: dict[str, Any] | None = None,
        models: Iterable[str] | _Unset | None = UNSET,
    ) -> APIKey:
        """Change what is given; ``models=None`` lifts a model restriction (omit to keep it)."""
        key = self.get(key_id)
        if weight is not None and weight <= 0:
            raise InvalidRequestError("weight must be greater than 0", param="weight")
        if limits is not None:
            key.limits = limits
        if weight is not None:
            key.weight = weight
        if tags is not None:
            key.tags = frozenset(tags)
        if metadata is not None:
            key.metadata = dict(metadata)
        if not isinstance(models, _Unset):
            key.models = None if models is None else frozenset(models)
        await self._save(key)
        return key

    async def _save(self, key: APIKey) -> None:
        """Write a key's settings without undoing a newer state another process set (on a
        shared store the stored document may have moved on since this copy was loaded)."""
        stored = await self._store.get_key(key.id)
        if (
            stored is not None
            and stored is not key
            and stored.state_changed_at > key.state_changed_at
        ):
            for name in _STATE_FIELDS:
                setattr(key, name, getattr(stored, name))
        await self._store.put_key(key)

    async def exclude_model(self, key_id: str, model: str) -> None:
        key = self.get(key_id)
        if model not in key.excluded_models:
            key.excluded_models = key.excluded_models | {model}
            await self._save(key)

    async def revoke(self, key_id: str, *, actor: str = "operator") -> StateTransition:
        """Remove a key for good: its material is deleted, the audit trail keeps the record."""
        key = self.get(key_id)
        transition = StateTransition(
            key_id=key_id,
            from_state=key.state,
            to_state=KeyState.DISABLED,
            reason="revoked",
            at=self._clock(),
            actor=actor,
        )
        await self._store.append_audit(transition)
        await self._store.delete_key(key_id)
        self._unindex(key_id)
        self._removed(key_id)
        return transition

    async def rotate(self, key_id: str, new_material: str, *, actor: str = "operator") -> APIKey:
        """Replace the secret behind a key id; history and limits stay with the id."""
        if not isinstance(new_material, str) or not new_material.strip():
            raise InvalidRequestError("new key material must be a non-empty string", param="key")
        key = self.get(key_id)
        key.encrypted_material = self._encryptor.encrypt(new_material, key.id)
        key.fingerprint = fingerprint(new_material)
        key.excluded_models = frozenset()
        await self._save(key)
        if key.state is not KeyState.AVAILABLE:
            await self.set_state(key_id, KeyState.AVAILABLE, "rotated", actor=actor)
        else:
            await self._store.append_audit(
                StateTransition(
                    key_id=key_id,
                    from_state=key.state,
                    to_state=key.state,
                    reason="rotated",
                    at=self._clock(),
                    actor=actor,
                )
            )
        return key
