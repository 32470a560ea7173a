"""Master key rotation: re-encrypt every stored key from the old master key to the new one.

Works on any :class:`StateStore` through ``list_keys`` and ``put_key``. A store that can swap
a key's ciphertext atomically (``swap_key_material``, as the MongoDB store does) gets a
compare-and-swap per key, so a key changed concurrently (rotated by another run, updated by an
operator) is never overwritten with a re-encryption of its old value. Without it, the key is
read again just before the write and skipped if its ciphertext changed; the remaining race is a
put of the whole key, so run the rotation on such stores while no router writes keys.

Idempotent: a key that already decrypts with the new master key is counted and left alone, so
a run that stopped half-way is finished by running it again. Plaintext exists only in local
variables between decrypt and encrypt; it is never logged or put in an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from apikeyrouter.domain.interfaces.state_store import StateStore
from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.utils.encryption import KeyEncryptor
from apikeyrouter.utils.exceptions import ConfigurationError


@runtime_checkable
class SupportsMaterialSwap(Protocol):
    async def swap_key_material(self, key_id: str, expected: str, new: str) -> bool: ...


@dataclass
class RotationReport:
    """What a rotation did (or, with ``dry_run``, would do). ``failed`` keys decrypt with
    neither master key; ``conflicts`` changed while being rotated (run again)."""

    dry_run: bool
    total: int = 0
    rotated: int = 0
    already_rotated: int = 0
    failed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.conflicts

    def summary(self) -> str:
        verb = "would re-encrypt" if self.dry_run else "re-encrypted"
        return (
            f"{verb} {self.rotated} of {self.total} keys; {self.already_rotated} already on the "
            f"new master key; {len(self.failed)} failed; {len(self.conflicts)} changed meanwhile"
        )


def _decrypts(encryptor: KeyEncryptor, key: APIKey) -> str | None:
    try:
        return encryptor.decrypt(key.encrypted_material, key.id)
    except ConfigurationError:
        return None


async def _write(store: StateStore, key: APIKey, new_material: str) -> bool:
    if isinstance(store, SupportsMaterialSwap):
        return await store.swap_key_material(key.id, key.encrypted_material, new_material)
    current = await store.get_key(key.id)
    if current is None or current.encrypted_material != key.encrypted_material:
        return False
    await store.put_key(current.model_copy(update={"encrypted_material": new_material}))
    return True


async def rotate_master_key(
    store: StateStore, old: KeyEncryptor, new: KeyEncryptor, *, dry_run: bool = False
) -> RotationReport:
    """Re-encrypt every key of ``store`` from ``old`` to ``new``, one key at a time."""
    report = RotationReport(dry_run=dry_run)
    for key in await store.list_keys():
        report.total += 1
        secret = _decrypts(old, key)
        if secret is None:
            if _decrypts(new, key) is not None:
                report.already_rotated += 1
            else:
                report.failed.append(key.id)
            continue
        sealed = new.encrypt(secret, key.id)
        if new.decrypt(sealed, key.id) != secret:  # never write what cannot be read back
            report.failed.append(key.id)
            continue
        del secret
        if dry_run or await _write(store, key, sealed):
            report.rotated += 1
        else:
            report.conflicts.append(key.id)
    return report
