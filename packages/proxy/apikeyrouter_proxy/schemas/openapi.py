"""Request bodies documented with the core's own models, validated by the core's own code.

Policy and budget bodies are read as plain JSON objects and validated by the core (so the error
messages are the core's, naming every field at fault, and the name or id comes from the URL),
yet the OpenAPI document should still show their real shape: for ``/docs`` readers, and so
schemathesis generates meaningful bodies. :func:`json_body` produces that ``requestBody``,
with the model's ``$defs`` inlined (a schema embedded in an OpenAPI document cannot carry its
own ``#/$defs`` references).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

_DEFS = "#/$defs/"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS):
            target = _inline(defs[ref.removeprefix(_DEFS)], defs)
            rest = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def model_schema(model: type[BaseModel], *, optional: Iterable[str] = ()) -> dict[str, Any]:
    """``model``'s validation schema, self-contained; ``optional`` fields lose ``required``
    (they come from the URL when the body leaves them out)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    dropped = set(optional)
    required = [name for name in inlined.get("required", []) if name not in dropped]
    if required:
        inlined["required"] = required
    else:
        inlined.pop("required", None)
    return inlined


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is ``schema``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
