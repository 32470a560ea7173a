"""Turn a YAML file (plus the environment) into a validated :class:`ProxyConfig`.

All problems are reported together, each naming its field path and YAML line, so fixing a
config is one edit, not a loop of edit-and-retry. Messages never include the offending value:
it might be a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from apikeyrouter_proxy.config.master_key import master_key_problem
from apikeyrouter_proxy.config.resolve import finish_config
from apikeyrouter_proxy.config.settings import CONFIG_PATH_ENV, ProxyConfig
from apikeyrouter_proxy.config.yaml_source import (
    ConfigError,
    ConfigIssue,
    LocatedDocument,
    format_path,
    parse_yaml,
    substitute_env,
)

_PREFIXES = ("Value error, ", "Assertion failed, ")


def _issues_from_validation(exc: ValidationError, document: LocatedDocument) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        message = str(error["msg"])
        for prefix in _PREFIXES:
            message = message.removeprefix(prefix)
        issues.append(ConfigIssue(format_path(loc), message, document.line_of(loc)))
    return issues


def load_config_text(
    text: str,
    source: str = "<config>",
    *,
    env: Mapping[str, str] | None = None,
    use_env_overrides: bool = True,
) -> ProxyConfig:
    """Parse and validate configuration text. ``env`` feeds ``${VAR}`` substitution (default:
    the process environment); ``use_env_overrides`` layers ``APIKEYROUTER_*`` variables on top.
    """
    document = parse_yaml(text, source)
    if document.data is None:
        document.data = {}
    if not isinstance(document.data, dict):
        raise ConfigError(source, [ConfigIssue("", "the top level must be a mapping", 1)])
    environ = os.environ if env is None else env
    data = substitute_env(document, environ, source)
    try:
        config = ProxyConfig(**data) if use_env_overrides else ProxyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _issues_from_validation(exc, document)) from None
    problem = master_key_problem(config.store, environ)
    if problem is not None:
        line = document.line_of(("store", "kind"))
        raise ConfigError(source, [ConfigIssue("store.kind", problem, line)])
    # Provider options by kind, the policies and pricing files, names across sections.
    return finish_config(config, source, document)


def load_config(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    use_env_overrides: bool = True,
) -> ProxyConfig:
    """Read and validate the file at ``path``; raises :class:`ConfigError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [ConfigIssue("", f"cannot read file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [ConfigIssue("", "the file is not UTF-8 text")]) from None
    return load_config_text(text, source, env=env, use_env_overrides=use_env_overrides)


def config_from_environment() -> tuple[ProxyConfig, Path | None]:
    """The config named by ``APIKEYROUTER_CONFIG``, else defaults plus environment overrides
    (no providers, no keys): what the module-level ``app`` is built from."""
    location = os.environ.get(CONFIG_PATH_ENV)
    if location:
        return load_config(location), Path(location)
    try:
        config = ProxyConfig()
    except ValidationError as exc:
        raise ConfigError(
            "environment", _issues_from_validation(exc, LocatedDocument({}))
        ) from None
    problem = master_key_problem(config.store, os.environ)
    if problem is not None:
        raise ConfigError("environment", [ConfigIssue("store.kind", problem)])
    return config, None
