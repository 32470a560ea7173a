"""Unit tests for the key manager and the key state machine."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from apikeyrouter.domain.components.key_manager import KeyManager
from apikeyrouter.domain.models.api_key import (
    ALLOWED_TRANSITIONS,
    ROUTABLE_STATES,
    SELF_HEALING_STATES,
    APIKey,
    KeyLimits,
    KeyState,
    can_transition,
)
from apikeyrouter.infrastructure.state_store.memory_store import InMemoryStateStore
from apikeyrouter.utils.encryption import KeyEncryptor, generate_master_key
from apikeyrouter.utils.exceptions import (
    ApiKeyRouterError,
    InvalidRequestError,
    InvalidStateTransitionError,
    KeyNotFoundError,
)

from tests.fake_clock import FakeClock

SECRET = "sk-test-0123456789abcdefWXYZ"
CANARY = "sk-CANARY-1234567890abcdef"

A, T, E, R, D, INV = (
    KeyState.AVAILABLE,
    KeyState.THROTTLED,
    KeyState.EXHAUSTED,
    KeyState.RECOVERING,
    KeyState.DISABLED,
    KeyState.INVALID,
)

# The state machine as specified (written out independently of the code under test).
EXPECTED_TRANSITIONS: dict[KeyState, set[KeyState]] = {
    A: {T, E, D, INV},
    T: {A, R, E, D, INV},
    E: {R, A, D, INV},
    R: {A, T, E, D, INV},
    D: {A},
    INV: {D, A},
}
ALLOWED_PAIRS = [(s, t) for s, targets in EXPECTED_TRANSITIONS.items() for t in sorted(targets)]
FORBIDDEN_PAIRS = [
    (s, t)
    for s, t in itertools.product(KeyState, KeyState)
    if s != t and t not in EXPECTED_TRANSITIONS[s]
]


@pytest.fixture
def store() -> InMemoryStateStore:
    return InMemoryStateStore()


@pytest.fixture
def encryptor() -> KeyEncryptor:
    return KeyEncryptor(generate_master_key())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000.0)


@pytest.fixture
def manager(store: InMemoryStateStore, encryptor: KeyEncryptor, clock: FakeClock) -> KeyManager:
    return KeyManager(store, encryptor, clock)


async def key_in_state(manager: KeyManager, state: KeyState) -> APIKey:
    key = await manager.register_key(SECRET, "openai")
    key.state = state  # test setup: the memory store holds the same object
    return key


# --- state machine (model level) ------------------------------------------------------------


def test_transition_table_matches_the_specification() -> None:
    assert {s: set(t) for s, t in ALLOWED_TRANSITIONS.items()} == EXPECTED_TRANSITIONS


def test_routable_and_self_healing_states() -> None:
    assert frozenset({A, R}) == ROUTABLE_STATES
    assert frozenset({T, E}) == SELF_HEALING_STATES


@pytest.mark.parametrize("state", list(KeyState))
def test_staying_in_the_same_state_is_allowed(state: KeyState) -> None:
    assert can_transition(state, state)


def test_invalid_never_recovers_automatically() -> None:
    assert not can_transition(INV, R)
    assert not can_transition(INV, T)
    assert not can_transition(INV, E)


# --- registration ---------------------------------------------------------------------------


async def test_register_encrypts_material_and_keeps_only_a_fingerprint(
    manager: KeyManager, store: InMemoryStateStore, encryptor: KeyEncryptor
) -> None:
    key = await manager.register_key(SECRET, "openai", weight=2.0, tags=["a", "b"])
    assert re.fullmatch(r"key_[0-9a-f]{16}", key.id)
    assert key.provider_id == "openai"
    assert key.state is KeyState.AVAILABLE
    assert key.weight == 2.0
    assert key.tags == frozenset({"a", "b"})
    assert SECRET not in key.encrypted_material
    assert key.encrypted_material.startswith("v1:")
    assert encryptor.decrypt(key.encrypted_material, key.id) == SECRET
    assert manager.secret(key) == SECRET
    assert key.fingerprint == "...WXYZ"
    assert await store.get_key(key.id) is not None


async def test_key_id_is_not_derived_from_the_secret(manager: KeyManager) -> None:
    first = await manager.register_key(SECRET, "openai")
    second = await manager.register_key(SECRET, "openai")
    assert first.id != second.id
    for key in (first, second):
        assert "0123456789" not in key.id
        assert "test" not in key.id


async def test_fingerprint_of_a_short_secret_reveals_nothing(manager: KeyManager) -> None:
    key = await manager.register_key("short-key", "openai")
    assert key.fingerprint == "..."


async def test_register_with_explicit_id_and_options(manager: KeyManager) -> None:
    limits = KeyLimits(requests_per_minute=10, tokens_per_minute=1000)
    key = await manager.register_key(
        SECRET,
        "openai",
        key_id="primary",
        limits=limits,
        metadata={"team": "search"},
        models=["gpt-4o"],
    )
    assert key.id == "primary"
    assert key.limits == limits
    assert key.metadata == {"team": "search"}
    assert key.models == frozenset({"gpt-4o"})
    assert manager.get("primary") is key


async def test_duplicate_id_is_rejected_and_original_kept(manager: KeyManager) -> None:
    original = await manager.register_key(SECRET, "openai", key_id="k1")
    with pytest.raises(InvalidRequestError) as info:
        await manager.register_key("sk-other-secret-000000", "openai", key_id="k1")
    assert info.value.param == "id"
    assert "k1" in info.value.message
    assert manager.get("k1") is original
    assert manager.secret(original) == SECRET


@pytest.mark.parametrize("material", ["", "   ", "\n\t"])
async def test_empty_material_is_rejected(manager: KeyManager, material: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await manager.register_key(material, "openai")
    assert info.value.param == "key"
    assert manager.list_keys() == []


async def test_non_string_material_is_rejected(manager: KeyManager) -> None:
    material: Any = 12345
    with pytest.raises(InvalidRequestError):
        await manager.register_key(material, "openai")


async def test_get_unknown_key_raises(manager: KeyManager) -> None:
    with pytest.raises(KeyNotFoundError) as info:
        manager.get("missing")
    assert info.value.param == "key_id"
    assert info.value.status == 404


async def test_list_keys_by_provider(manager: KeyManager) -> None:
    a = await manager.register_key(SECRET, "openai")
    b = await manager.register_key(SECRET, "anthropic")
    assert {k.id for k in manager.list_keys()} == {a.id, b.id}
    assert [k.id for k in manager.list_keys("openai")] == [a.id]
    assert [k.id for k in manager.keys_for_provider("anthropic")] == [b.id]
    assert manager.list_keys("gemini") == []
    assert list(manager.keys_for_provider("gemini")) == []


async def test_list_redacted_contains_no_material(manager: KeyManager) -> None:
    key = await manager.register_key(SECRET, "openai", tags=["z", "a"], models=["m2", "m1"])
    listing = manager.list_redacted()
    assert len(listing) == 1
    entry = listing[0]
    assert entry["id"] == key.id
    assert entry["fingerprint"] == "...WXYZ"
    assert entry["tags"] == ["a", "z"]
    assert entry["models"] == ["m1", "m2"]
    assert "encrypted_material" not in entry
    text = json.dumps(listing)  # JSON-able
    assert SECRET not in text
    assert key.encrypted_material not in text
    assert manager.list_redacted("anthropic") == []


async def test_load_fills_a_second_manager_from_the_store(
    manager: KeyManager, store: InMemoryStateStore, encryptor: KeyEncryptor
) -> None:
    key = await manager.register_key(SECRET, "openai")
    other = KeyManager(store, encryptor)
    assert await other.load() == 1
    assert other.secret(other.get(key.id)) == SECRET
    assert [k.id for k in other.list_keys("openai")] == [key.id]


# --- state transitions ----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), ALLOWED_PAIRS)
async def test_allowed_transition(
    manager: KeyManager,
    store: InMemoryStateStore,
    clock: FakeClock,
    source: KeyState,
    target: KeyState,
) -> None:
    key = await key_in_state(manager, source)
    clock.now = 2_000.0
    result = await manager.set_state(
        key.id, target, "because", actor="tester", request_id="req_1", cooldown_until=2_030.0
    )
    assert result is not None
    assert (result.from_state, result.to_state) == (source, target)
    assert (result.reason, result.actor, result.request_id, result.at) == (
        "because",
        "tester",
        "req_1",
        2_000.0,
    )
    assert key.state is target
    assert key.state_reason == "because"
    assert key.state_changed_at == 2_000.0
    assert key.cooldown_until == 2_030.0
    stored = await store.get_key(key.id)
    assert stored is not None
    assert stored.state is target
    assert await store.list_audit(key.id) == [result]


@pytest.mark.parametrize(("source", "target"), FORBIDDEN_PAIRS)
async def test_forbidden_transition(
    manager: KeyManager, store: InMemoryStateStore, source: KeyState, target: KeyState
) -> None:
    key = await key_in_state(manager, source)
    with pytest.raises(InvalidStateTransitionError) as info:
        await manager.set_state(key.id, target, "nope")
    assert info.value.param == "state"
    assert info.value.status == 409
    assert source.value in info.value.message
    assert target.value in info.value.message
    assert key.state is source
    assert await store.list_audit(key.id) == []


async def test_forbidden_transition_with_expected_also_raises(manager: KeyManager) -> None:
    key = await key_in_state(manager, D)
    with pytest.raises(InvalidStateTransitionError):
        await manager.set_state(key.id, T, "nope", expected=D)


async def test_set_state_on_unknown_key_raises(manager: KeyManager) -> None:
    with pytest.raises(KeyNotFoundError):
        await manager.set_state("missing", T, "x")


async def test_set_state_with_expected_losing_a_race_returns_none(
    manager: KeyManager, store: InMemoryStateStore
) -> None:
    key = await manager.register_key(SECRET, "openai")
    # Another actor already throttled the key.
    assert await manager.set_state(key.id, T, "first", cooldown_until=1_030.0) is not None
    # A second actor still believes the key is available.
    lost = await manager.set_state(key.id, E, "second", expected=A, cooldown_until=5_000.0)
    assert lost is None
    assert key.state is T
    assert key.state_reason == "first"
    assert key.cooldown_until == 1_030.0
    assert [t.reason for t in await store.list_audit(key.id)] == ["first"]


async def test_set_state_with_expected_winning(manager: KeyManager) -> None:
    key = await manager.register_key(SECRET, "openai")
    won = await manager.set_state(key.id, T, "429", expected=A)
    assert won is not None
    assert won.from_state is A
    assert key.state is T


async def test_set_state_without_expected_raises_when_the_store_moved_first(
    manager: KeyManager, store: InMemoryStateStore
) -> None:
    key = await manager.register_key(SECRET, "openai")
    # Another replica disabled the key; this manager's index still says available.
    await store.put_key(key.model_copy(update={"state": KeyState.DISABLED}))
    with pytest.raises(InvalidStateTransitionError, match="concurrently"):
        await manager.set_state(key.id, T, "429")
    assert key.state is A
    assert await manager.set_state(key.id, T, "429", expected=A) is None


async def test_set_state_back_to_available_clears_cooldown(
    manager: KeyManager, store: InMemoryStateStore
) -> None:
    key = await manager.register_key(SECRET, "openai")
    await manager.set_state(key.id, T, "429", cooldown_until=1_030.0)
    assert await store.get_cooldown(key.id, 1_000.0) == 1_030.0
    await manager.set_state(key.id, A, "reset passed")
    assert key.cooldown_until is None
    assert await store.get_cooldown(key.id, 1_000.0) is None


async def test_audit_trail_records_every_transition_in_order(
    manager: KeyManager, store: InMemoryStateStore, clock: FakeClock
) -> None:
    key = await manager.register_key(SECRET, "openai")
    steps = [(T, "429"), (R, "reset"), (A, "probe ok"), (INV, "401")]
    for i, (target, reason) in enumerate(steps):
        clock.now = 1_000.0 + i
        await manager.set_state(key.id, target, reason)
    audit = await store.list_audit(key.id)
    assert [(t.from_state, t.to_state, t.reason, t.at) for t in audit] == [
        (A, T, "429", 1_000.0),
        (T, R, "reset", 1_001.0),
        (R, A, "probe ok", 1_002.0),
        (A, INV, "401", 1_003.0),
    ]
    assert all(t.actor == "router" for t in audit)


# --- update / exclude_model ---------------------------------------------------------------


async def test_update_changes_fields_and_persists(
    manager: KeyManager, store: InMemoryStateStore, encryptor: KeyEncryptor
) -> None:
    key = await manager.register_key(SECRET, "openai", tags=["old"], metadata={"a": 1})
    limits = KeyLimits(requests_per_day=1000)
    updated = await manager.update(
        key.id, limits=limits, weight=3.5, tags=["new"], metadata={"b": 2}, models=["gpt-4o"]
    )
    assert updated is key
    assert key.limits == limits
    assert key.weight == 3.5
    assert key.tags == frozenset({"new"})
    assert key.metadata == {"b": 2}
    assert key.models == frozenset({"gpt-4o"})
    assert not key.serves_model("gpt-3.5-turbo")
    other = KeyManager(store, encryptor)
    await other.load()
    assert other.get(key.id).weight == 3.5


async def test_update_without_arguments_keeps_everything(manager: KeyManager) -> None:
    key = await manager.register_key(SECRET, "openai", weight=2.0, tags=["t"], models=["m"])
    await manager.update(key.id)
    assert (key.weight, key.tags, key.models) == (2.0, frozenset({"t"}), frozenset({"m"}))


@pytest.mark.parametrize("weight", [0.0, -1.0])
async def test_update_rejects_non_positive_weight(manager: KeyManager, weight: float) -> None:
    key = await manager.register_key(SECRET, "openai")
    with pytest.raises(InvalidRequestError) as info:
        await manager.update(key.id, weight=weight, tags=["should-not-apply"])
    assert info.value.param == "weight"
    assert key.weight == 1.0
    assert key.tags == frozenset()


async def test_update_unknown_key_raises(manager: KeyManager) -> None:
    with pytest.raises(KeyNotFoundError):
        await manager.update("missing", weight=2.0)


async def test_exclude_model(manager: KeyManager, store: InMemoryStateStore) -> None:
    key = await manager.register_key(SECRET, "openai")
    assert key.serves_model("gpt-4o")
    await manager.exclude_model(key.id, "gpt-4o")
    await manager.exclude_model(key.id, "gpt-4o")  # idempotent
    assert key.excluded_models == frozenset({"gpt-4o"})
    assert not key.serves_model("gpt-4o")
    assert key.serves_model("gpt-4o-mini")
    stored = await store.get_key(key.id)
    assert stored is not None
    assert not stored.serves_model("gpt-4o")


async def test_exclusion_wins_over_allowed_models(manager: KeyManager) -> None:
    key = await manager.register_key(SECRET, "openai", models=["gpt-4o", "o1"])
    await manager.exclude_model(key.id, "o1")
    assert key.serves_model("gpt-4o")
    assert not key.serves_model("o1")


# --- revoke / rotate ------------------------------------------------------------------------


async def test_revoke_removes_key_but_keeps_audit(
    manager: KeyManager, store: InMemoryStateStore, clock: FakeClock
) -> None:
    key = await manager.register_key(SECRET, "openai")
    keep = await manager.register_key(SECRET, "openai")
    await manager.set_state(key.id, T, "429")
    clock.now = 1_500.0
    record = await manager.revoke(key.id)
    assert (record.from_state, record.to_state, record.reason) == (T, D, "revoked")
    assert record.actor == "operator"
    assert record.at == 1_500.0
    with pytest.raises(KeyNotFoundError):
        manager.get(key.id)
    assert await store.get_key(key.id) is None
    assert [k.id for k in manager.list_keys()] == [keep.id]
    assert [k.id for k in manager.keys_for_provider("openai")] == [keep.id]
    assert [t.reason for t in await store.list_audit(key.id)] == ["429", "revoked"]
    with pytest.raises(KeyNotFoundError):
        await manager.revoke(key.id)


@pytest.mark.parametrize("state", [A, T, E, R, D, INV])
async def test_rotate_replaces_material_and_makes_key_available(
    manager: KeyManager, store: InMemoryStateStore, state: KeyState
) -> None:
    key = await manager.register_key(SECRET, "openai", limits=KeyLimits(requests_per_minute=5))
    key_id = key.id
    old_cipher = key.encrypted_material
    if state is not A:
        await manager.set_state(key_id, state if state is not R else T, "setup", cooldown_until=9e9)
        if state is R:
            await manager.set_state(key_id, R, "setup")
    await manager.exclude_model(key_id, "gpt-4o")
    new_secret = "sk-rotated-9999999999NEW1"
    rotated = await manager.rotate(key_id, new_secret, actor="alice")
    assert rotated.id == key_id
    assert manager.get(key_id) is rotated
    assert rotated.encrypted_material != old_cipher
    assert manager.secret(rotated) == new_secret
    assert rotated.fingerprint == "...NEW1"
    assert rotated.state is KeyState.AVAILABLE
    assert rotated.cooldown_until is None
    assert rotated.excluded_models == frozenset()
    assert rotated.limits == KeyLimits(requests_per_minute=5)
    stored = await store.get_key(key_id)
    assert stored is not None
    assert stored.state is KeyState.AVAILABLE
    last = (await store.list_audit(key_id))[-1]
    assert (last.to_state, last.reason, last.actor) == (A, "rotated", "alice")
    assert last.from_state is state


@pytest.mark.parametrize("material", ["", "  "])
async def test_rotate_rejects_empty_material(manager: KeyManager, material: str) -> None:
    key = await manager.register_key(SECRET, "openai")
    with pytest.raises(InvalidRequestError) as info:
        await manager.rotate(key.id, material)
    assert info.value.param == "key"
    assert manager.secret(key) == SECRET


async def test_rotate_unknown_key_raises(manager: KeyManager) -> None:
    with pytest.raises(KeyNotFoundError):
        await manager.rotate("missing", "sk-new-000000000000")


# --- canary: the secret never leaks ----------------------------------------------------------


async def test_canary_secret_never_appears_anywhere(
    manager: KeyManager, store: InMemoryStateStore
) -> None:
    key = await manager.register_key(CANARY, "openai", key_id="canary")
    surfaces: list[str] = [
        repr(key),
        str(key),
        key.model_dump_json(),
        json.dumps(key.redacted()),
        repr(key.redacted()),
        repr(manager),
        repr(store),
        json.dumps(manager.list_redacted()),
    ]
    errors: list[ApiKeyRouterError] = []
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: manager.register_key(CANARY, "openai", key_id="canary"),
        lambda: manager.set_state("canary", KeyState.RECOVERING, "forbidden"),
        lambda: manager.rotate("canary", "   "),
        lambda: manager.update("canary", weight=-1.0),
        lambda: manager.set_state("no-such-key", KeyState.DISABLED, "x"),
        lambda: manager.register_key("", "openai"),
    ]
    for attempt in attempts:
        with pytest.raises(ApiKeyRouterError) as info:
            await attempt()
        errors.append(info.value)
    # Decrypting with the wrong master key fails without echoing anything secret.
    with pytest.raises(ApiKeyRouterError) as info:
        KeyManager(store, KeyEncryptor(generate_master_key())).secret(key)
    errors.append(info.value)
    for error in errors:
        surfaces += [str(error), repr(error), json.dumps(error.to_openai_error())]
    assert len(errors) == len(attempts) + 1
    for text in surfaces:
        assert CANARY not in text
        assert "CANARY-1234567890" not in text
    assert manager.secret(key) == CANARY  # the secret itself is still recoverable


async def test_settings_updates_keep_a_newer_state_set_by_another_process() -> None:
    """On a shared store the stored key may have moved on (another replica throttled it):
    changing a weight here must not write the stale state back."""

    class SharedLike(InMemoryStateStore):
        """Hands out copies, like a store that serialises keys."""

        async def get_key(self, key_id: str) -> APIKey | None:
            key = await super().get_key(key_id)
            return None if key is None else key.model_copy()

    store = SharedLike()
    manager = KeyManager(store, KeyEncryptor(generate_master_key()), clock=lambda: 1000.0)
    key = await manager.register_key("sk-test-shared-0001", "p")
    remote = key.model_copy(
        update={"state": KeyState.THROTTLED, "state_changed_at": 2000.0, "cooldown_until": 2060.0}
    )
    remote.encrypted_material = key.encrypted_material
    await store.put_key(remote)  # another replica throttled the key
    await manager.update(key.id, weight=3)
    stored = await store.get_key(key.id)
    assert stored is not None
    assert stored.weight == 3
    assert stored.state is KeyState.THROTTLED
    assert stored.cooldown_until == 2060.0
    assert key.state is KeyState.THROTTLED  # the local copy caught up too
