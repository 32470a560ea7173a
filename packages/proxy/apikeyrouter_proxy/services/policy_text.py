"""Reading a policy document sent to ``POST /api/v1/policies/validate``.

The body may be YAML or JSON text (any content type but JSON), or JSON: ``{"text": "..."}``
(text inside JSON, for clients that only send JSON), a policy document (``{"policies": [...]}``),
a list of policies, or one policy. Everything goes through the core's ``parse_policies`` on the
original text, because only the text knows lines: a single policy object is wrapped into a list
without adding a line break, so its lines stay right.

The endpoint is behind the admin token, but YAML aliases can still make a small document
expensive to walk ("billion laughs"), so documents with many aliases are refused up front.
"""

from __future__ import annotations

import orjson
import yaml
from apikeyrouter.domain.components.policy_loader import parse_policies
from apikeyrouter.domain.models.policy import Policy, PolicyProblem, PolicyValidationError

SOURCE = "<body>"
MAX_ALIASES = 100


def _problem(message: str, line: int | None = None) -> PolicyProblem:
    return PolicyProblem(source=SOURCE, line=line, message=message)


def _too_many_aliases(text: str) -> bool:
    count = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                count += 1
                if count > MAX_ALIASES:
                    return True
    except yaml.YAMLError:
        return False  # the real parse reports the syntax error with its line
    return False


def _parse(text: str, fmt: str) -> tuple[list[Policy], list[PolicyProblem]]:
    if fmt == "yaml" and _too_many_aliases(text):
        return [], [_problem(f"more than {MAX_ALIASES} YAML aliases: refused")]
    try:
        return parse_policies(text, source=SOURCE, format="json" if fmt == "json" else "auto"), []
    except PolicyValidationError as exc:
        return [], exc.problems
    except RecursionError:
        return [], [_problem("the document is nested too deeply")]
    except yaml.YAMLError as exc:  # the core lets a reader error (control character) through
        return [], [_problem(f"invalid YAML: {_reader_detail(exc, text)}", _reader_line(exc, text))]


def _reader_detail(exc: yaml.YAMLError, text: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character #x{exc.character:04x} is not allowed"
    return type(exc).__name__


def _reader_line(exc: yaml.YAMLError, text: str) -> int | None:
    if isinstance(exc, yaml.reader.ReaderError):
        return text.count("\n", 0, exc.position) + 1
    return None


def read_document(body: bytes, is_json: bool) -> tuple[list[Policy], list[PolicyProblem]]:
    """The valid policies, or every problem found (never both)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_problem("the body is not UTF-8 text")]
    if not is_json:
        return _parse(text, "yaml")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], [_problem(f"invalid JSON: {exc.msg}", exc.lineno)]
    if isinstance(data, dict) and set(data) == {"text"} and isinstance(data["text"], str):
        return _parse(data["text"], "yaml")
    if isinstance(data, dict) and "policies" not in data:
        policies, problems = _parse("[" + text + "]", "json")
        return policies, [_unwrap(p) for p in problems]
    return _parse(text, "json")


def _unwrap(problem: PolicyProblem) -> PolicyProblem:
    """Paths of a single policy are relative to it: ``scope``, not ``policies[0].scope``."""
    path = problem.path.removeprefix("policies[0]").removeprefix(".")
    return problem.model_copy(update={"path": path})
