"""Reading an OpenAI chat request, for adapters that rebuild it for another provider.

Anthropic and Gemini both take an OpenAI chat body and re-express it in their own shape. How that
body is *read* (what a ``data:`` URL holds, how tool-call arguments are encoded, which messages
form a turn) is OpenAI's format, not theirs, so it is written once here and cannot drift between
translators. What each provider *builds* from it stays in its own translation module.

Everything here is pure; a request that cannot be read raises :class:`InvalidRequestError` with
the offending ``param``, which the adapters return as a caller fault without spending a key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from apikeyrouter.utils.exceptions import InvalidRequestError

#: One translated unit of content: an Anthropic block or a Gemini part.
Item = dict[str, Any]

#: Builds the provider's turn for one non-system message: its role there and its items.
TurnBuilder = Callable[[Any, dict[str, Any], int], tuple[str, list[Item]]]

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)$", re.S
)


class DataUrl(NamedTuple):
    """An inline base64 image: its media type (lower-cased; ``None`` if the URL named none)."""

    media_type: str | None
    data: str


def parse_base64_data_url(url: str) -> DataUrl | None:
    """The parts of a base64 ``data:`` URL; ``None`` for any other string.

    Providers only take inline images as base64, so a percent-encoded ``data:`` URL counts as
    unreadable here rather than being passed on to fail upstream.
    """
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group("params"):
        return None
    mime = match.group("mime")
    return DataUrl(mime.lower() if mime else None, match.group("data"))


def image_source_url(image_url: Any, param: str) -> str:
    """The URL of an ``image_url`` part, which OpenAI allows as an object or a bare string."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("image_url.url is required", param=param)
    return url


def tool_call_arguments(function: dict[str, Any], param: str) -> dict[str, Any]:
    """The arguments of an assistant tool call as an object.

    OpenAI sends them as a JSON *string*; providers that take structured arguments need the
    object, and anything but an object (or nothing) cannot be a function's arguments.
    """
    raw = function.get("arguments")
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise InvalidRequestError(
            "tool call arguments must be a JSON object", param=f"{param}.function.arguments"
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidRequestError(
            "tool call arguments must be a JSON object", param=f"{param}.function.arguments"
        )
    return parsed


def plain_text(content: Any, position: int, *, allow_refusal: bool = False) -> str:
    """The text of message content that may hold nothing but text (system, tool results, ...).

    ``allow_refusal`` lets ``refusal`` parts through as text, for providers with nowhere else to
    put an earlier assistant refusal.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        kinds = ("text", "refusal") if allow_refusal else ("text",)
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in kinds:
                raise InvalidRequestError(
                    "only text parts are allowed here", param=f"messages.{position}.content"
                )
            text = part.get("text")
            if allow_refusal and not text:
                text = part.get("refusal")
            texts.append(str(text or ""))
        return "\n".join(t for t in texts if t)
    raise InvalidRequestError("content must be a string or a list", param=f"messages.{position}")


def user_content(
    content: Any,
    position: int,
    *,
    text: Callable[[str], Item],
    image: Callable[[Any, str], Item],
    provider: str,
) -> list[Item]:
    """A user message's content as provider items, built by ``text`` and ``image``.

    Only text and ``image_url`` parts have an equivalent at the providers translated to; any
    other part (audio, files) is refused by name rather than silently dropped. Empty text is
    dropped, since providers reject empty text items.
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [text(content)] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(
            "content must be a string or a list", param=f"messages.{position}.content"
        )
    items: list[Item] = []
    for index, part in enumerate(content):
        param = f"messages.{position}.content.{index}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            assert isinstance(part, dict)
            value = str(part.get("text") or "")
            if value:
                items.append(text(value))
        elif kind == "image_url":
            assert isinstance(part, dict)
            items.append(image(part.get("image_url"), param))
        else:
            raise InvalidRequestError(
                f"content part type {kind!r} is not supported by the {provider} API", param=param
            )
    return items


def unsupported_role(role: Any, position: int) -> InvalidRequestError:
    """The error for a message role with no counterpart at the provider."""
    return InvalidRequestError(
        f"unsupported message role {role!r}", param=f"messages.{position}.role"
    )


def split_conversation(
    messages: list[Any],
    *,
    system_text: Callable[[Any, int], str],
    build_turn: TurnBuilder,
    items_key: str,
) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the provider turns of an OpenAI ``messages`` list.

    System and developer messages are lifted into one system prompt, because both Anthropic and
    Gemini take it apart from the turns. Consecutive turns with the same provider role are merged
    (under ``items_key``), because both require roles to alternate where OpenAI does not; a
    message that translates to no items is dropped for the same reason.
    """
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError("a message must be an object", param=f"messages.{position}")
        role = message.get("role")
        if role in ("system", "developer"):
            text = system_text(message.get("content"), position)
            if text:
                system_parts.append(text)
            continue
        turn_role, items = build_turn(role, message, position)
        if not items:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1][items_key].extend(items)
        else:
            turns.append({"role": turn_role, items_key: items})
    return "\n\n".join(system_parts), turns


def stop_sequences(body: dict[str, Any]) -> list[str] | None:
    """``stop`` as a list, OpenAI allowing a bare string; ``None`` when the caller gave none."""
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        return [stop]
    if isinstance(stop, list) and stop:
        return [str(s) for s in stop if s]
    return None


def tool_function(tool: Any, param: str) -> dict[str, Any]:
    """The ``function`` of an OpenAI tool definition, which must at least name the function.

    Only function tools exist at the providers translated to.
    """
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise InvalidRequestError("only function tools are supported", param=param)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError("function tools need a name", param=f"{param}.function")
    return function


def forced_function_name(choice: Any) -> str:
    """The function a ``tool_choice`` object forces; call it once the string modes are handled,
    since whatever is left must be that object form."""
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    raise InvalidRequestError("unsupported tool_choice", param="tool_choice")
