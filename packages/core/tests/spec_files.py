"""Where the providers' published API specs are: ``shared/specs`` beside the repository.

The specs are the project's shared reference (not vendored: one of them carries no licence),
present next to every checkout and CI clone. A test that needs one fails, never skips, when
it is missing: a spec check that silently does not run proves nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[3]
_CANDIDATES = (_REPO_ROOT.parent / "shared" / "specs", Path("/work/shared/specs"))


def spec_path(relative: str) -> Path:
    for root in _CANDIDATES:
        path = root / relative
        if path.is_file():
            return path
    pytest.fail(f"provider spec {relative!r} not found under {[str(c) for c in _CANDIDATES]}")
