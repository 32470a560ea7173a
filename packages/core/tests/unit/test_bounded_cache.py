"""The shared eviction rule of the request-path caches."""

from __future__ import annotations

from apikeyrouter.utils.bounded_cache import remember


def test_a_value_is_stored_and_returned() -> None:
    cache: dict[str, int | None] = {}
    assert remember(cache, "a", 1, limit=3) == 1
    assert remember(cache, "b", None, limit=3) is None  # None is a value like any other
    assert cache == {"a": 1, "b": None}


def test_a_full_cache_starts_over_and_never_exceeds_its_bound() -> None:
    cache: dict[int, int] = {}
    for n in range(10):
        remember(cache, n, n * n, limit=4)
        assert len(cache) <= 4
    assert cache == {8: 64, 9: 81}  # emptied when it held 4, at 0-3 and again at 4-7
