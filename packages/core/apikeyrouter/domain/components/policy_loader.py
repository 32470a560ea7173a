"""Turns policy text (YAML or JSON) into validated policies, or into errors an operator can fix.

No file I/O here: the caller reads the file (``infrastructure/config``) and passes the text plus
its name as ``source``. Every problem is reported at once, each as
``source:line: policies[2].retry.max_attempts: message``: pydantic tells us *which field* is
wrong, and a YAML loader that records where each mapping key and sequence item starts tells us
*which line* that field is on. JSON goes through the same line recorder (JSON is YAML flow
syntax), so JSON validation errors carry lines too; JSON syntax errors carry line and column.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from apikeyrouter.domain.models.policy import (
    ClientLimits,
    FallbackStep,
    Policy,
    PolicyProblem,
    PolicyScope,
    PolicyValidationError,
    RetrySettings,
)

PolicyFormat = Literal["yaml", "json", "auto"]
_Path = tuple[str | int, ...]
#: Which model validates the value under each Policy field, for "did you mean" suggestions.
_NESTED: dict[str, type[BaseModel]] = {
    "scope": PolicyScope,
    "retry": RetrySettings,
    "client_limits": ClientLimits,
    "fallback": FallbackStep,
}


#: Line recording stops after this many nodes: a document of aliases of aliases ("billion
#: laughs") would otherwise make the walk exponential. Real policy files are far smaller.
_MAX_RECORDED_NODES = 100_000


class _LineRecordingLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line (1-based) where each key and list item starts.

    Lines are recorded by walking the composed node tree before it is turned into Python data,
    keyed by the same path pydantic reports (``("policies", 2, "retry")``). Duplicate mapping
    keys, which YAML and JSON parsers silently collapse to the last one, are recorded too.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._visits = 0
        self.too_large = False
        self.lines: dict[_Path, int] = {}
        self.duplicates: list[tuple[_Path, int, int]] = []  # (path, line, first line)

    def construct_document(self, node: yaml.Node) -> Any:
        self._visits = 0
        self._record(node, (), set())
        return super().construct_document(node)

    def _record(self, node: yaml.Node, path: _Path, active: set[int]) -> None:
        if id(node) in active:  # a recursive alias: its lines are recorded already
            return
        self._visits += 1
        if self._visits > _MAX_RECORDED_NODES:  # aliases can fan out exponentially
            self.too_large = True
            return
        active.add(id(node))
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                    continue
                name, line = str(key_node.value), key_node.start_mark.line + 1
                if name in seen:
                    self.duplicates.append(((*path, name), line, seen[name]))
                else:
                    seen[name] = line
                self.lines[(*path, name)] = line
                self._record(value_node, (*path, name), active)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                self._record(item, (*path, index), active)
        active.discard(id(node))


class _Parsed:
    """The outcome of reading text: data, where things are, and what was already wrong."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.data: Any = None
        self.lines: dict[_Path, int] = {}
        self.problems: list[PolicyProblem] = []

    def problem(self, message: str, path: _Path = (), line: int | None = None) -> None:
        if line is None:
            line = _line_for(self.lines, path)
        self.problems.append(
            PolicyProblem(source=self.source, line=line, path=_display(path), message=message)
        )


def _yaml(text: str, parsed: _Parsed, *, lines_only: bool = False) -> bool:
    try:
        # The reader rejects control characters already here, outside the parse proper.
        loader = _LineRecordingLoader(text)
    except yaml.YAMLError as exc:
        if not lines_only:
            position = getattr(exc, "position", None)  # a ReaderError: a bad character
            line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
            parsed.problem(f"invalid YAML: {exc}", line=line)
        return False
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        if not lines_only:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "syntax error"
            parsed.problems.append(
                PolicyProblem(
                    source=parsed.source,
                    line=None if mark is None else mark.line + 1,
                    column=None if mark is None else mark.column + 1,
                    message=f"invalid YAML: {problem}",
                )
            )
        return False
    except yaml.YAMLError as exc:
        if not lines_only:
            parsed.problem(f"invalid YAML: {exc}")
        return False
    finally:
        loader.dispose()
    if loader.too_large:
        if not lines_only:
            parsed.problem(
                f"invalid YAML: the document expands to more than {_MAX_RECORDED_NODES} "
                "nodes (aliases of aliases?)"
            )
        return False
    parsed.lines = loader.lines
    if not lines_only:
        parsed.data = data
    for path, line, first in loader.duplicates:
        parsed.problem(
            f"duplicate key {path[-1]!r} (first on line {first}); only one may be given", path, line
        )
    return True


def _json(text: str, parsed: _Parsed) -> bool:
    try:
        parsed.data = json.loads(text)
    except json.JSONDecodeError as exc:
        parsed.problems.append(
            PolicyProblem(
                source=parsed.source,
                line=exc.lineno,
                column=exc.colno,
                message=f"invalid JSON: {exc.msg}",
            )
        )
        return False
    _yaml(text, parsed, lines_only=True)  # best effort: lines for validation errors
    return True


def _read(text: str, source: str, format: PolicyFormat) -> _Parsed:
    parsed = _Parsed(source)
    if format == "json":
        _json(text, parsed)
    elif format == "yaml":
        _yaml(text, parsed)
    elif text.lstrip().startswith(("{", "[")):
        # Looks like JSON; a YAML flow document that is not valid JSON still loads as YAML,
        # but if both fail the JSON error is the one that helps.
        if not _json(text, parsed):
            fallback = _Parsed(source)
            if _yaml(text, fallback):
                return fallback
    else:
        _yaml(text, parsed)
    return parsed


def parse_policies(
    text: str, *, source: str = "<policies>", format: PolicyFormat = "auto"
) -> list[Policy]:
    """Parse and validate a policy document: ``{"policies": [...]}`` or a bare list.

    Empty text (or ``policies:`` with no items) means no policies. Raises
    ``PolicyValidationError`` listing every problem with its line.
    """
    parsed = _read(text, source, format)
    if parsed.problems and parsed.data is None:
        raise PolicyValidationError(parsed.problems)
    return _validate_document(parsed)


def validate_policies(data: Any, *, source: str = "<policies>") -> list[Policy]:
    """Validate already-parsed data (a management API body, say) with the same messages."""
    parsed = _Parsed(source)
    parsed.data = data
    return _validate_document(parsed)


def validate_policy(data: Any, *, source: str = "<policy>") -> Policy:
    """Validate a single policy object; problem paths are relative to the policy."""
    parsed = _Parsed(source)
    policy = _validate_item(data, (), parsed)
    if policy is None or parsed.problems:
        raise PolicyValidationError(parsed.problems)
    return policy


def _validate_document(parsed: _Parsed) -> list[Policy]:
    data = parsed.data
    items: Any = None
    prefix: _Path = ()
    if isinstance(data, dict):
        for extra in sorted(str(k) for k in data if k != "policies"):
            parsed.problem(
                f"unknown top-level field {extra!r}: a policy document has only 'policies'",
                (extra,),
            )
        items, prefix = data.get("policies"), ("policies",)
    elif isinstance(data, list):
        items = data
    elif data is not None:
        parsed.problem(
            "expected a mapping with a 'policies' list, or a list of policies; "
            f"got {type(data).__name__}"
        )
    if items is None:
        items = []
    if not isinstance(items, list):
        parsed.problem(f"'policies' must be a list, got {type(items).__name__}", prefix)
        items = []
    policies = []
    first_line: dict[str, tuple[int, int | None]] = {}
    for index, item in enumerate(items):
        policy = _validate_item(item, (*prefix, index), parsed)
        if policy is not None:
            policies.append(policy)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            name_path = (*prefix, index, "name")
            if name in first_line:
                first, line = first_line[name]
                where = f"policies[{first}]" + (f", line {line}" if line is not None else "")
                parsed.problem(f"duplicate policy name {name!r} (first used at {where})", name_path)
            else:
                first_line[name] = (index, _line_for(parsed.lines, name_path))
    if parsed.problems:
        parsed.problems.sort(key=lambda p: p.line if p.line is not None else 0)
        raise PolicyValidationError(parsed.problems)
    return policies


def _validate_item(item: Any, doc_path: _Path, parsed: _Parsed) -> Policy | None:
    try:
        return Policy.model_validate(item)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = _data_path(item, error["loc"])
            parsed.problems.append(
                PolicyProblem(
                    source=parsed.source,
                    line=_line_for(parsed.lines, (*doc_path, *loc)),
                    path=_display((*doc_path, *loc)),
                    message=_message(error, loc),
                )
            )
        return None


def _data_path(data: Any, loc: tuple[int | str, ...]) -> _Path:
    """The part of a pydantic location that names places in the data.

    Union and tagged validators add segments such as ``"list[str]"`` after the last real field;
    walking the data tells them apart (a missing field is kept: it names where it belongs).
    """
    path: list[str | int] = []
    current = data
    for segment in loc:
        if isinstance(current, dict) and isinstance(segment, str):
            path.append(segment)
            current = current.get(segment)
        elif isinstance(current, list) and isinstance(segment, int) and segment < len(current):
            path.append(segment)
            current = current[segment]
        else:
            break
    return tuple(path)


def _message(error: ErrorDetails, loc: _Path) -> str:
    kind = error["type"]
    if kind == "extra_forbidden" and loc:
        return _unknown_field(str(loc[-1]), loc[:-1])
    if kind == "missing":
        return "required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool) and loc:
        shown = repr(value)
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message


def _unknown_field(name: str, parent: _Path) -> str:
    model: type[BaseModel] = Policy
    fields = [p for p in parent if isinstance(p, str)]
    if fields:
        nested = _NESTED.get(fields[0])
        if nested is None:
            return f"unknown field {name!r}"
        model = nested
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
    return f"unknown field {name!r} ({hint})"


def _line_for(lines: dict[_Path, int], path: _Path) -> int | None:
    """The line of the deepest part of ``path`` the document has (a missing field: its parent)."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _display(path: _Path) -> str:
    """``policies[2].retry.max_attempts``; items of a bare list are shown as ``policies[i]`` too."""
    text = "policies" if path and isinstance(path[0], int) else ""
    for segment in path:
        text += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if text else segment)
    return text
