"""Finding repeated names in configuration, in linear time (configs hold thousands of keys)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def repeated(values: Iterable[str]) -> list[str]:
    """The values that occur more than once, sorted (for an error message that names them)."""
    return sorted(value for value, count in Counter(values).items() if count > 1)
