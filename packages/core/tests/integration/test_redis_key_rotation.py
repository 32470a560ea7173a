"""Master key rotation on Redis: each key's ciphertext is swapped in one script, so a key
changed meanwhile is never overwritten with a re-encryption of its old value."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.infrastructure.state_store.key_rotation import rotate_master_key
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from apikeyrouter.utils.encryption import KeyEncryptor, generate_master_key
from redis.asyncio import Redis

from tests.integration.conftest import REDIS_URL

StoreMaker = Callable[..., RedisStateStore]


def sealed_key(key_id: str, encryptor: KeyEncryptor) -> APIKey:
    return APIKey(
        id=key_id,
        provider_id="openai",
        encrypted_material=encryptor.encrypt(f"sk-test-{key_id}-secret", key_id),
        fingerprint="...cret",
    )


async def test_rotation_re_encrypts_every_key_and_refuses_a_stale_swap(
    make_redis: StoreMaker,
) -> None:
    store = make_redis()
    old, new = KeyEncryptor(generate_master_key()), KeyEncryptor(generate_master_key())
    for n in range(4):
        await store.put_key(sealed_key(f"k{n}", old))
    before = {key.id: key.encrypted_material for key in await store.list_keys()}

    report = await rotate_master_key(store, old, new)
    assert (report.total, report.rotated, report.ok) == (4, 4, True)
    for key in await store.list_keys():
        assert new.decrypt(key.encrypted_material, key.id) == f"sk-test-{key.id}-secret"
    again = await rotate_master_key(store, old, new)
    assert (again.rotated, again.already_rotated) == (0, 4)
    # A writer holding the old ciphertext cannot put it back over the rotated one.
    stale = old.encrypt("sk-test-k0-secret", "k0")
    assert not await store.swap_key_material("k0", before["k0"], stale)
    assert not await store.swap_key_material("missing", before["k0"], stale)
    with pytest.raises(ValueError, match="not ciphertext"):
        await store.swap_key_material("k1", before["k1"], "sk-plaintext")


async def test_a_key_changed_during_rotation_is_reported_not_overwritten(
    make_redis: StoreMaker,
) -> None:
    store = make_redis()
    old, new = KeyEncryptor(generate_master_key()), KeyEncryptor(generate_master_key())
    await store.put_key(sealed_key("k0", old))
    listed = await store.list_keys()
    # An operator rotates the provider secret between the rotation's read and its write.
    changed = old.encrypt("sk-test-k0-rotated-by-operator", "k0")
    await store.put_key(listed[0].model_copy(update={"encrypted_material": changed}))
    sealed = new.encrypt("sk-test-k0-secret", "k0")
    assert not await store.swap_key_material("k0", listed[0].encrypted_material, sealed)
    current = await store.get_key("k0")
    assert current is not None
    assert current.encrypted_material == changed


async def test_a_record_from_before_the_material_field_rotates_too(
    make_redis: StoreMaker, redis_prefix: str
) -> None:
    store = make_redis()
    old, new = KeyEncryptor(generate_master_key()), KeyEncryptor(generate_master_key())
    await store.put_key(sealed_key("legacy", old))
    admin: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:  # the earlier layout: the ciphertext inside the JSON document only
        name = f"{redis_prefix}key:legacy"
        material = await admin.hget(name, "encrypted_material")
        doc = orjson.loads(await admin.hget(name, "doc") or "{}")
        await admin.hset(name, "doc", orjson.dumps({**doc, "encrypted_material": material}))
        await admin.hdel(name, "encrypted_material")
        loaded = await store.get_key("legacy")
        assert loaded is not None
        assert loaded.encrypted_material == material

        report = await rotate_master_key(store, old, new)
        assert (report.rotated, report.ok) == (1, True)
        rotated = await store.get_key("legacy")
        assert rotated is not None
        assert new.decrypt(rotated.encrypted_material, "legacy") == "sk-test-legacy-secret"
    finally:
        await admin.aclose()
