"""The watcher's change check: the config and the files it names, without re-parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from apikeyrouter_proxy.config import files
from apikeyrouter_proxy.config.files import config_digest


def test_an_unchanged_config_is_not_parsed_again_but_its_files_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "proxy.yaml"
    policies = tmp_path / "policies.yaml"
    policies.write_text("policies: []\n")
    config.write_text(f"policies_file: policies.yaml\n# {tmp_path}\n")
    parses = 0
    real_load = yaml.safe_load

    def counting_load(data: bytes) -> object:
        nonlocal parses
        parses += 1
        return real_load(data)

    monkeypatch.setattr(yaml, "safe_load", counting_load)
    first = config_digest(config, config.read_bytes())
    assert config_digest(config, config.read_bytes()) == first
    assert parses == 1  # the second check hashed the same text: no YAML parse
    policies.write_text("policies: [{name: x}]\n")
    changed = config_digest(config, config.read_bytes())
    assert changed != first  # only the named file changed, and that is seen
    assert parses == 1
    config.write_text(f"policies_file: policies.yaml\nlogging: {{level: INFO}}\n# {tmp_path}\n")
    assert config_digest(config, config.read_bytes()) not in (first, changed)
    assert parses == 2


def test_a_broken_config_names_no_files(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    assert files.referenced_paths(b"policies_file: [unclosed\n", tmp_path) == ()
    assert files.referenced_paths(b"- a list\n", tmp_path) == ()
    config.write_text("policies_file: p.yaml\n")
    assert config_digest(config, b"policies_file: p.yaml\n")  # unreadable file: still a digest
