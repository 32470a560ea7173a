"""The README's demo runs end to end (real servers on free ports) and shows failover."""

from __future__ import annotations

import pytest
from apikeyrouter_proxy import demo


def test_demo_runs_and_shows_failover(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main(["--requests", "8", "--latency-ms", "0"])
    out = capsys.readouterr().out
    assert "served by steady" in out
    assert "failed over from revoked (invalid_key)" in out
    assert "revoked  invalid" in out
    assert "streaming one request:" in out
    assert "sk-demo" not in out
