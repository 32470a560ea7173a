"""Deterministic replies for the Anthropic and Gemini formats, with their trigger words.

Both formats answer with the same text as the OpenAI one (``Simulated reply to: <first 40 chars
of the last user message>``, cut by the max-token setting), so a test can send one conversation
through any adapter and expect the same words back. On top of that they need behaviour a plain
echo cannot show, chosen by words in the last user message so a test controls it from the
request alone:

* ``weather`` (any case) in a request that offers tools answers with a call to the first tool
  (or the tool the request forces), with arguments ``{"location": "Paris"}`` when the tool's
  schema has a ``location`` property and ``{}`` otherwise. A forcing tool choice (Anthropic
  ``any``/``tool``, Gemini mode ``ANY``) calls the tool without the word; ``none``/``NONE``
  never does. Only the user's own text counts, not tool results, so the turn after a tool
  result is answered with text.
* ``BLOCKME`` (exact case), Gemini only: the candidate is blocked with ``finishReason: SAFETY``.

Stop sequences cut the reply at their first occurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from .generation import build_reply
from .openai_wire import split_content
from .parsing import GenerationRequest

__all__ = [
    "SAFETY_TRIGGER",
    "TOOL_LOCATION",
    "TOOL_TRIGGER",
    "Finish",
    "NativeReply",
    "NativeRequest",
    "ToolCall",
    "build_native_reply",
    "tool_arguments",
    "wants_tool",
]

TOOL_TRIGGER = "weather"
SAFETY_TRIGGER = "BLOCKME"
TOOL_LOCATION = "Paris"


class Finish(Enum):
    """Why a reply ended, before each format names it."""

    END = "end"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_CALL = "tool_call"
    SAFETY = "safety"


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def json(self) -> str:
        return orjson.dumps(self.arguments).decode()


@dataclass(slots=True)
class NativeRequest:
    """What the simulator needs from an Anthropic or Gemini generation request.

    ``quoted`` is the text the reply echoes; ``tool_call`` is set when the tool trigger fired,
    ``blocked`` when the safety trigger did; ``candidates`` is Gemini's ``candidateCount``.
    """

    model: str
    stream: bool
    max_tokens: int | None
    prompt_tokens: int
    quoted: str
    stop_sequences: tuple[str, ...] = ()
    tool_call: ToolCall | None = None
    blocked: bool = False
    candidates: int = 1


@dataclass(frozen=True, slots=True)
class NativeReply:
    """One candidate's answer: text or a tool call, its token count and why it ended."""

    text: str
    tokens: int
    finish: Finish
    stop_sequence: str | None = None
    tool_call: ToolCall | None = None
    pieces: list[str] = field(default_factory=list)  # what a stream sends, one per event


def wants_tool(trigger_text: str, has_tools: bool, forced: bool, disabled: bool) -> bool:
    """Whether the deterministic tool trigger fires (see the module docstring)."""
    if not has_tools or disabled:
        return False
    return forced or TOOL_TRIGGER in trigger_text.lower()


def tool_arguments(schema: Any) -> dict[str, Any]:
    """``{"location": "Paris"}`` if the JSON schema has a ``location`` property, else ``{}``."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict) and "location" in properties:
        return {"location": TOOL_LOCATION}
    return {}


def build_native_reply(request: NativeRequest, natural_tokens: int) -> NativeReply:
    """Tokens = min(max tokens, natural length), as in the OpenAI format; a blocked reply has
    none, and a tool call streams its JSON arguments as the pieces."""
    if request.blocked:
        return NativeReply("", 0, Finish.SAFETY)
    limit = request.max_tokens
    tokens = natural_tokens if limit is None else min(limit, natural_tokens)
    if request.tool_call is not None:
        pieces = split_content(request.tool_call.json(), tokens)
        return NativeReply("", tokens, Finish.TOOL_CALL, tool_call=request.tool_call, pieces=pieces)
    generation = GenerationRequest(
        request.model, request.stream, False, limit, request.prompt_tokens, [request.quoted]
    )
    reply = build_reply(generation, True, natural_tokens)
    text = reply.texts[0]
    finish = Finish.MAX_TOKENS if reply.finish_reason == "length" else Finish.END
    stop = _first_stop(text, request.stop_sequences)
    if stop is not None:
        cut = text[: text.index(stop)]
        tokens = math.ceil(tokens * len(cut) / len(text))
        return NativeReply(cut, tokens, Finish.STOP_SEQUENCE, stop, pieces=_pieces(cut, tokens))
    return NativeReply(text, tokens, finish, pieces=_pieces(text, tokens))


def _first_stop(text: str, stops: tuple[str, ...]) -> str | None:
    found = [(text.index(s), s) for s in stops if s and s in text]
    return min(found)[1] if found else None


def _pieces(text: str, tokens: int) -> list[str]:
    return [piece for piece in split_content(text, tokens) if piece]
