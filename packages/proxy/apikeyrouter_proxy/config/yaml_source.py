"""YAML loading that remembers where every value came from, and ``${VAR}`` substitution.

A validation error is only useful if it says where to look: the loader records the line of
every mapping value and list item by its path (``("providers", 0, "keys", 1, "key")``), so an
error about a field can name the line it is on. Secrets stay out of the file: ``${VAR}`` (or
``${VAR:-default}``) in a string is replaced by the environment variable, and an unset variable
is an error naming the variable and where it was referenced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem with a configuration: where (field path, line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        field_name = f"{self.path}: " if self.path else ""
        return f"{where}{field_name}{self.message}"


class ConfigError(Exception):
    """An invalid configuration. ``issues`` lists every problem found, each with its line."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(self.describe())

    def describe(self) -> str:
        lines = [f"invalid configuration in {self.source}:"]
        lines.extend(f"  {issue}" for issue in self.issues)
        return "\n".join(lines)


@dataclass(slots=True)
class LocatedDocument:
    """Parsed YAML plus the 1-based line of each value, keyed by its path."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one (a missing field is
        reported at the mapping that should have held it)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def format_path(path: Path) -> str:
    """``("providers", 0, "keys")`` -> ``providers[0].keys``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _record_lines(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                _record_lines(value_node, (*path, str(key_node.value)), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines)


#: libyaml's loader where PyYAML was built with it: about 10x faster on a config of ten thousand
#: keys, with the same nodes and marks (lines) as the pure-Python one.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str, source: str) -> LocatedDocument:
    """Parse one YAML document with the safe loader, keeping line numbers."""
    try:
        # The reader checks the text as it is built: a control character fails right here.
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [ConfigIssue("", f"YAML error: {exc}")]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return LocatedDocument({})
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        message = f"YAML syntax error: {exc.problem or exc}"
        raise ConfigError(source, [ConfigIssue("", message, line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [ConfigIssue("", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}
    _record_lines(node, (), lines)
    return LocatedDocument(data, lines)


def substitute_env(document: LocatedDocument, env: Mapping[str, str], source: str) -> Any:
    """Replace ``${VAR}`` references in every string; collect every unset variable at once."""
    issues: list[ConfigIssue] = []

    def replace(value: Any, path: Path) -> Any:
        if isinstance(value, str):
            if "${" not in value:
                return value

            def lookup(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                found = env.get(name)
                if found is not None:
                    return found
                if default is not None:
                    return default
                issues.append(
                    ConfigIssue(
                        format_path(path),
                        f"environment variable {name} is not set",
                        document.line_of(path),
                    )
                )
                return ""

            return _VAR.sub(lookup, value)
        if isinstance(value, dict):
            return {k: replace(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [replace(v, (*path, i)) for i, v in enumerate(value)]
        return value

    result = replace(document.data, ())
    if issues:
        raise ConfigError(source, issues)
    return result
