"""The files a config refers to: ``policies_file`` and ``pricing_overrides_file``.

Paths are relative to the config file's directory (a config and its policies usually live and
move together, e.g. in one ConfigMap). The config watcher hashes these files together with the
config itself, so editing only the policies file is a reload too.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import yaml
from apikeyrouter.domain.components.policy_loader import parse_policies
from apikeyrouter.domain.models.cost_model import ModelPrice, PricingError
from apikeyrouter.domain.models.policy import Policy, PolicyValidationError
from apikeyrouter.infrastructure.config.pricing_loader import load_pricing_file

from apikeyrouter_proxy.config.governance import Problem
from apikeyrouter_proxy.config.loaded import ConfigFiles
from apikeyrouter_proxy.config.settings import ProxyConfig

POLICIES_FIELD = "policies_file"
PRICING_FIELD = "pricing_overrides_file"
_FILE_FIELDS = (POLICIES_FIELD, PRICING_FIELD)


def resolve_path(base_dir: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base_dir / path


def _read_policies(path: Path, problems: list[Problem]) -> tuple[Policy, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(((POLICIES_FIELD,), f"cannot read {path}: {exc.strerror}"))
        return ()
    except UnicodeDecodeError:
        problems.append(((POLICIES_FIELD,), f"{path} is not UTF-8 text"))
        return ()
    try:
        return tuple(parse_policies(text, source=str(path)))
    except PolicyValidationError as exc:
        problems.extend(((POLICIES_FIELD,), str(problem)) for problem in exc.problems)
        return ()
    except yaml.YAMLError as exc:  # a control character: the core's loader lets it through
        problems.append(((POLICIES_FIELD,), f"{path}: not valid YAML: {exc}"))
        return ()


def _read_pricing(path: Path, problems: list[Problem]) -> dict[str, ModelPrice]:
    try:
        return load_pricing_file(path)
    except PricingError as exc:
        problems.append(((PRICING_FIELD,), exc.message))
        return {}


def read_files(config: ProxyConfig, base_dir: Path) -> tuple[ConfigFiles, list[Problem]]:
    """Read and validate both files (when named); every problem is returned, none raised."""
    problems: list[Problem] = []
    policies: tuple[Policy, ...] = ()
    pricing: dict[str, ModelPrice] = {}
    paths: list[Path] = []
    if config.policies_file:
        path = resolve_path(base_dir, config.policies_file)
        paths.append(path.absolute())
        policies = _read_policies(path, problems)
    if config.pricing_overrides_file:
        path = resolve_path(base_dir, config.pricing_overrides_file)
        paths.append(path.absolute())
        pricing = _read_pricing(path, problems)
    return ConfigFiles(policies, pricing, tuple(paths)), problems


@functools.lru_cache(maxsize=8)
def referenced_paths(data: bytes, base_dir: Path) -> tuple[Path, ...]:
    """The files a config text names, read leniently (a broken config names none).

    Cached by text: the watcher hashes the config every second, and parsing the YAML each
    time (pure-Python PyYAML) cost the serving process a few milliseconds a second."""
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError:
        return ()
    if not isinstance(document, dict):
        return ()
    found = []
    for name in _FILE_FIELDS:
        value = document.get(name)
        if isinstance(value, str) and value and "${" not in value:
            found.append(resolve_path(base_dir, value))
    return tuple(found)


def config_digest(path: Path, data: bytes) -> bytes:
    """A hash of the config text and of every file it refers to: any of them changing is a
    reason to reload (an unreadable file hashes as a marker, so its return is one too)."""
    digest = hashlib.sha256(data)
    for ref in referenced_paths(data, path.parent):
        digest.update(b"\0" + str(ref).encode() + b"\0")
        try:
            digest.update(ref.read_bytes())
        except OSError:
            digest.update(b"\0unreadable\0")
    return digest.digest()
