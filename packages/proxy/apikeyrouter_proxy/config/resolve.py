"""The loader's second pass: checks that need the whole config, its files, or the provider kind.

Pydantic validates each field on its own; this pass validates a provider's ``options`` against
its ``kind``, reads ``policies_file`` and ``pricing_overrides_file``, and checks names and
budget references across sections. Every problem gets the line of the field it concerns (a
problem inside a policies file also names that file's own line), and all are reported at once.
"""

from __future__ import annotations

from pathlib import Path

from apikeyrouter_proxy.config.files import read_files
from apikeyrouter_proxy.config.governance import FieldPath, governance_problems
from apikeyrouter_proxy.config.loaded import ConfigFiles
from apikeyrouter_proxy.config.provider_options import option_problems
from apikeyrouter_proxy.config.settings import ProxyConfig
from apikeyrouter_proxy.config.yaml_source import (
    ConfigError,
    ConfigIssue,
    LocatedDocument,
    format_path,
)


def check_and_read(
    config: ProxyConfig, base_dir: Path, document: LocatedDocument | None = None
) -> tuple[ConfigFiles, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []

    def add(path: FieldPath, message: str) -> None:
        line = document.line_of(path) if document is not None else None
        issues.append(ConfigIssue(format_path(path), message, line))

    for index, provider in enumerate(config.providers):
        for loc, message in option_problems(provider):
            add(("providers", index, "options", *loc), message)
    files, file_problems = read_files(config, base_dir)
    for path, message in file_problems:
        add(path, message)
    label = config.policies_file or "the policies file"
    for path, message in governance_problems(
        config.policies, files.policies, config.budgets, config.auth, label
    ):
        add(path, message)
    return files, issues


def finish_config(
    config: ProxyConfig, source: str, document: LocatedDocument | None = None
) -> ProxyConfig:
    """``config`` with its files attached, or :class:`ConfigError` listing every problem.
    Relative file paths are taken from the directory of ``source`` (the config file)."""
    files, issues = check_and_read(config, Path(source).parent, document)
    if issues:
        raise ConfigError(source, issues)
    if config.policies_file is None and config.pricing_overrides_file is None:
        return config  # nothing read: keep it equal to the same config built in code
    return config.with_files(files)
