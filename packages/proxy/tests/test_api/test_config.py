"""Configuration: YAML + environment, ``${VAR}`` secrets, errors with field paths and lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from apikeyrouter import RoutingObjective
from apikeyrouter_proxy.cli import main as cli_main
from apikeyrouter_proxy.config import ConfigError, ProxyConfig, load_config, load_config_text

VALID = textwrap.dedent(
    """\
    server:
      host: 127.0.0.1
      port: 9100
      admin_token: ${ADMIN_TOKEN}
      max_body_bytes: 65536
    auth:
      clients:
        - id: web
          key: ${WEB_CLIENT_KEY}
          requests_per_minute: 60
    routing:
      objective: reliability
      max_attempts: 3
    circuit:
      failure_threshold: 2
    providers:
      - id: main
        kind: openai
        base_url: http://127.0.0.1:9/v1
        models: [gpt-4o, gpt-4o-mini]
        keys:
          - id: k1
            key: ${OPENAI_KEY_1}
            requests_per_minute: 500
            tags: [primary]
          - key: ${OPENAI_KEY_2:-sk-fallback-0000000000}
            weight: 2
    logging:
      level: debug
    """
)
ENV = {
    "ADMIN_TOKEN": "admin-secret-value",
    "WEB_CLIENT_KEY": "web-client-secret-1",
    "OPENAI_KEY_1": "sk-from-env-111111111111",
}


def test_valid_file_with_env_secrets() -> None:
    config = load_config_text(VALID, "test.yaml", env=ENV, use_env_overrides=False)
    assert config.server.port == 9100
    assert config.server.admin_token is not None
    assert config.server.admin_token.get_secret_value() == "admin-secret-value"
    assert config.routing.objective is RoutingObjective.RELIABILITY
    assert config.logging.level == "DEBUG"
    keys = config.providers[0].keys
    assert keys[0].key.get_secret_value() == "sk-from-env-111111111111"
    assert keys[1].key.get_secret_value() == "sk-fallback-0000000000"  # ${VAR:-default}
    assert keys[0].limits().requests_per_minute == 500
    assert "sk-from-env" not in repr(config)  # secrets never show in a repr


def test_unset_variable_names_the_variable_field_and_line() -> None:
    env = {k: v for k, v in ENV.items() if k != "OPENAI_KEY_1"}
    with pytest.raises(ConfigError) as caught:
        load_config_text(VALID, "test.yaml", env=env, use_env_overrides=False)
    (issue,) = caught.value.issues
    assert issue.line == 23
    assert issue.path == "providers[0].keys[0].key"
    assert "OPENAI_KEY_1" in issue.message


def test_validation_errors_name_field_and_line_and_hide_values() -> None:
    text = textwrap.dedent(
        """\
        server:
          port: 99999
        providers:
          - id: main
            kind: bedrock
            keys:
              - key: sk-live-THIS-IS-SECRET-0001
                weight: -1
                colour: red
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "bad.yaml", env={}, use_env_overrides=False)
    found = {(i.path, i.line) for i in caught.value.issues}
    assert ("server.port", 2) in found
    assert ("providers[0].kind", 5) in found
    assert ("providers[0].keys[0].weight", 8) in found
    assert ("providers[0].keys[0].colour", 9) in found
    described = caught.value.describe()
    assert "bad.yaml" in described
    assert "line 8" in described
    assert "THIS-IS-SECRET" not in described


def test_scan_limit_defaults_accepts_null_and_rejects_zero() -> None:
    assert load_config_text("{}", env={}, use_env_overrides=False).routing.scan_limit == 64
    whole = load_config_text("routing:\n  scan_limit: null\n", env={}, use_env_overrides=False)
    assert whole.routing.scan_limit is None
    with pytest.raises(ConfigError) as caught:
        load_config_text("routing:\n  scan_limit: 0\n", env={}, use_env_overrides=False)
    (issue,) = caught.value.issues
    assert (issue.path, issue.line) == ("routing.scan_limit", 2)


def test_missing_required_field_points_at_its_parent() -> None:
    text = "providers:\n  - kind: openai\n    keys: []\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={}, use_env_overrides=False)
    (issue,) = caught.value.issues
    assert issue.path == "providers[0].id"
    assert issue.line == 2


def test_duplicate_ids_are_rejected() -> None:
    text = textwrap.dedent(
        """\
        providers:
          - id: a
            keys: [{id: k, key: sk-aaaaaaaaaaaa}]
          - id: b
            keys: [{id: k, key: sk-bbbbbbbbbbbb}]
        """
    )
    with pytest.raises(ConfigError, match="duplicate key id"):
        load_config_text(text, env={}, use_env_overrides=False)


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("server:\n  port: [1, 2\nproviders: []\n", env={})
    assert caught.value.issues[0].line is not None
    assert "YAML" in caught.value.issues[0].message


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config_text("- just\n- a list\n", env={})


def test_empty_file_means_defaults() -> None:
    config = load_config_text("", env={}, use_env_overrides=False)
    assert config == ProxyConfig.model_validate({})
    assert config.server.host == "127.0.0.1"
    assert config.server.max_body_bytes == 4 * 1024 * 1024


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEYROUTER_SERVER__PORT", "9999")
    monkeypatch.setenv("APIKEYROUTER_ROUTING__MAX_ATTEMPTS", "7")
    monkeypatch.setenv("APIKEYROUTER_MASTER_KEY", "not-a-config-field")
    config = load_config_text(VALID, env=ENV)
    assert config.server.port == 9999
    assert config.server.host == "127.0.0.1"  # untouched siblings keep the file's value
    assert config.routing.max_attempts == 7


def test_load_config_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_cli_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    assert cli_main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "provider main: openai" in out
    assert "admin-secret-value" not in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: nope\n")
    assert cli_main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 2: server.port" in err
