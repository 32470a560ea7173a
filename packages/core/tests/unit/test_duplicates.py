"""Repeated names in configuration (ids of providers, keys, clients, groups, policies)."""

from __future__ import annotations

from apikeyrouter.utils.duplicates import repeated


def test_repeated_values_are_named_once_each_and_sorted() -> None:
    assert repeated(["b", "a", "c", "a", "b", "a"]) == ["a", "b"]
    assert repeated([]) == []
    assert repeated(iter(["x", "y"])) == []
