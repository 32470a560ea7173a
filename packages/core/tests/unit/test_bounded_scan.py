"""A large pool is scanned in turns: bounded work per request, every key still visited."""

from __future__ import annotations

import pytest
from apikeyrouter.domain.components.candidate_filter import _rotated, collect_candidates
from apikeyrouter.domain.models.api_key import APIKey, KeyState


def pool(size: int) -> list[APIKey]:
    return [
        APIKey(id=f"k{n:03d}", provider_id="p", encrypted_material="x", fingerprint="f")
        for n in range(size)
    ]


def ids(keys: list[APIKey]) -> list[str]:
    return [key.id for key in keys]


@pytest.mark.parametrize("size", [1, 2, 63, 64, 65, 127, 128, 129, 200])
def test_a_rotation_yields_every_key_once_in_order_from_its_start(size: int) -> None:
    keys = pool(size)
    for start in {0, 1, size // 2, size - 1}:
        seen = ids(list(_rotated(keys, start)))
        assert seen == ids(keys[start:] + keys[:start])


def test_a_bounded_scan_stops_at_the_limit_and_says_where_to_go_on() -> None:
    keys = pool(10)
    found = collect_candidates(keys, "m", 0.0, {}, limit=3, start=8, pool_id="p")
    assert ids([c.key for c in found.candidates]) == ["k008", "k009", "k000"]
    assert (found.considered, found.pool, found.truncated) == (3, 10, True)
    assert found.resume_at == {"p": 1}
    again = collect_candidates(keys, "m", 0.0, {}, limit=3, start=1, pool_id="p")
    assert ids([c.key for c in again.candidates]) == ["k001", "k002", "k003"]


def test_keys_that_cannot_serve_do_not_count_towards_the_limit() -> None:
    keys = pool(10)
    for key in keys[:4]:
        key.state = KeyState.DISABLED
    found = collect_candidates(keys, "m", 0.0, {}, limit=2, start=0, pool_id="p")
    assert ids([c.key for c in found.candidates]) == ["k004", "k005"]
    assert found.considered == 6
    assert found.excluded == {"disabled": 4}
    assert found.resume_at == {"p": 6}


def test_a_pool_no_larger_than_the_limit_is_scanned_whole_from_its_first_key() -> None:
    keys = pool(5)
    found = collect_candidates(keys, "m", 0.0, {}, limit=5, start=3, pool_id="p")
    assert ids([c.key for c in found.candidates]) == ids(keys)
    assert not found.truncated
    assert found.resume_at == {}


def test_a_bounded_scan_that_finds_too_few_keys_has_looked_at_all_of_them() -> None:
    keys = pool(10)
    for key in keys:
        if key.id != "k002":
            key.state = KeyState.DISABLED
    found = collect_candidates(keys, "m", 0.0, {}, limit=3, start=5, pool_id="p")
    assert ids([c.key for c in found.candidates]) == ["k002"]
    assert (found.considered, found.truncated) == (10, False)
    assert found.resume_at == {"p": 5}
