"""Validation of caller input into a RequestIntent, with errors that name the field."""

from __future__ import annotations

from typing import Any

from apikeyrouter.domain.models.request_context import (
    Endpoint,
    RequestIntent,
    RoutingObjective,
    new_request_id,
)
from apikeyrouter.domain.models.trusted import trusted
from apikeyrouter.utils.exceptions import InvalidRequestError

_REQUIRED_INPUT = {
    Endpoint.CHAT: "messages",
    Endpoint.COMPLETIONS: "prompt",
    Endpoint.EMBEDDINGS: "input",
}


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequestError(f"'{name}' must be a positive integer", param=name)
        return value
    return None


def _parse_objective(objective: RoutingObjective | str | None) -> RoutingObjective | None:
    if objective is None:
        return None
    try:
        return RoutingObjective(objective)
    except ValueError as exc:
        allowed = ", ".join(o.value for o in RoutingObjective)
        raise InvalidRequestError(
            f"unknown objective {objective!r}; expected one of {allowed}", param="objective"
        ) from exc


def _raw_intent(
    body: dict[str, Any],
    model: str,
    client_id: str | None,
    request_id: str | None,
    objective: RoutingObjective | str | None,
) -> RequestIntent:
    """A non-LLM API call: the body goes through as is; only requests are metered."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean", param="stream")
    return trusted(
        RequestIntent,
        endpoint=Endpoint.RAW,
        model=model,
        body=body,
        stream=stream,
        max_tokens=None,
        client_id=client_id,
        request_id=request_id or new_request_id(),
        objective=_parse_objective(objective),
        timeout_seconds=None,
        metadata={},
    )


def intent_from_openai(
    body: Any,
    endpoint: Endpoint = Endpoint.CHAT,
    *,
    client_id: str | None = None,
    request_id: str | None = None,
    objective: RoutingObjective | str | None = None,
) -> RequestIntent:
    """Check the few fields routing needs; everything else is passed through untouched."""
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object", param=None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string", param="model"
        )
    if endpoint is Endpoint.RAW:
        return _raw_intent(body, model, client_id, request_id, objective)
    field = _REQUIRED_INPUT[endpoint]
    value = body.get(field)
    if endpoint is Endpoint.CHAT:
        if not isinstance(value, list) or not value:
            raise InvalidRequestError("'messages' must be a non-empty array", param="messages")
        for index, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequestError(
                    f"'messages[{index}]' must be an object with a string 'role'",
                    param=f"messages[{index}]",
                )
    elif value is None or not isinstance(value, str | list):
        raise InvalidRequestError(f"'{field}' must be a string or an array", param=field)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean", param="stream")
    if stream and endpoint is Endpoint.EMBEDDINGS:
        raise InvalidRequestError("embeddings cannot be streamed", param="stream")
    parsed_objective = _parse_objective(objective)
    # Fields are checked above; skip re-validating the (possibly large) body on the hot path.
    # Every field is given explicitly (see domain.models.trusted).
    return trusted(
        RequestIntent,
        endpoint=endpoint,
        model=model,
        body=body,
        stream=stream,
        max_tokens=_max_tokens(body),
        client_id=client_id,
        request_id=request_id or new_request_id(),
        objective=parsed_objective,
        timeout_seconds=None,
        metadata={},
    )
