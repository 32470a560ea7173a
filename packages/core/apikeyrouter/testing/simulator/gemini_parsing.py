"""Validation of Gemini requests, strict where the real API is strict.

Google's JSON parser accepts each field in lowerCamelCase or in its proto snake_case spelling
and rejects any field the message does not have (``Unknown name "max_tokens"``), which is exactly
what catches an adapter leaking OpenAI fields; the API also demands non-empty ``contents`` and
``parts``, one data field per part, roles ``user``/``model``, and a function-response turn right
after the function-call turn it answers, with as many responses as calls. Gemini 3 models also
demand the thought signature on the first function call of every model step in the current
turn (since the last user turn with text in it): a conversation whose signatures were dropped on
the way fails, as it does at Google. All answered with 400 ``INVALID_ARGUMENT``.

Token estimate, as for OpenAI: ceil(chars / 4) over all text (system instruction, text parts,
function calls and responses as JSON), plus 3 per content and 3 for a system instruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ApiError
from .gemini_wire import invalid_argument, unknown_field
from .native import SAFETY_TRIGGER, NativeRequest, ToolCall, tool_arguments, wants_tool
from .parsing import MESSAGE_OVERHEAD_TOKENS, estimate_tokens

__all__ = [
    "EmbedRequest",
    "load_object",
    "parse_batch_embed",
    "parse_count_tokens",
    "parse_embed",
    "parse_generate",
]

_REQUEST_FIELDS = frozenset(
    {"model", "contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
     "generationConfig", "cachedContent"}
)  # fmt: skip
_GENERATION_FIELDS = frozenset(
    {"candidateCount", "enableEnhancedCivicAnswers", "frequencyPenalty", "logprobs",
     "maxOutputTokens", "mediaResolution", "presencePenalty", "responseJsonSchema",
     "responseLogprobs", "responseMimeType", "responseModalities", "responseSchema", "seed",
     "speechConfig", "stopSequences", "temperature", "thinkingConfig", "topK", "topP"}
)  # fmt: skip
_PART_DATA = frozenset(
    {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
     "codeExecutionResult"}
)  # fmt: skip
_PART_FIELDS = _PART_DATA | {"thought", "thoughtSignature", "videoMetadata"}
_TOOL_FIELDS = frozenset(
    {"functionDeclarations", "codeExecution", "googleSearch", "googleSearchRetrieval",
     "urlContext"}
)  # fmt: skip
_DECLARATION_FIELDS = frozenset(
    {"name", "description", "behavior", "parameters", "parametersJsonSchema", "response",
     "responseJsonSchema"}
)  # fmt: skip
_EMBED_FIELDS = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})
_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_SNAKE = re.compile(r"_([a-z0-9])")
_MAX_STOP_SEQUENCES = 5
_MAX_BATCH = 100


def load_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_argument(
            "Invalid JSON payload received. Unexpected token in the request body."
        ) from None
    if not isinstance(payload, dict):
        raise invalid_argument(
            "Invalid JSON payload received. The request body must be a JSON object."
        )
    return payload


def _fields(value: Any, known: frozenset[str], parent: str) -> dict[str, Any]:
    """The object with camelCase keys; unknown keys are an error, as at Google."""
    if not isinstance(value, dict):
        where = parent or "the request"
        raise invalid_argument(f"Invalid JSON payload received. {where} must be an object.")
    out: dict[str, Any] = {}
    for name, item in value.items():
        camel = _SNAKE.sub(lambda m: m.group(1).upper(), name)
        if camel not in known:
            raise unknown_field(name, parent)
        out[camel] = item
    return out


def _field_error(path: str, problem: str) -> ApiError:
    return invalid_argument(f"* GenerateContentRequest.{path}: {problem}\n")


class _Contents:
    """Walks ``contents`` once: validates, counts characters, finds the last user turn."""

    def __init__(self) -> None:
        self.chars = 0
        self.quoted = ""  # all text of the last user turn, function responses included
        self.user_text = ""  # only what the user typed in the last user turn
        #: Index of a model content in the current turn whose first function call carries no
        #: thought signature (None: every step is signed, or none calls a function).
        self.unsigned_call_at: int | None = None
        self._previous_calls = 0

    def walk(self, contents: Any) -> int:
        if contents is None or contents == []:
            raise _field_error("contents", "contents is not specified")
        if not isinstance(contents, list):
            raise invalid_argument("Invalid JSON payload received. 'contents' must be a list.")
        for index, content in enumerate(contents):
            self._content(
                _fields(content, frozenset({"role", "parts"}), f"contents[{index}]"), index
            )
        return len(contents)

    def _content(self, content: dict[str, Any], index: int) -> None:
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise invalid_argument("Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _field_error(f"contents[{index}].parts", "contents.parts must not be empty.")
        typed: list[str] = []
        responses: list[str] = []
        calls = 0
        first_call_signed = True
        for position, raw in enumerate(parts):
            where = f"contents[{index}].parts[{position}]"
            part = _fields(raw, _PART_FIELDS, where)
            kind = _data_field(part, where)
            if kind == "text":
                if part.get("thought") is not True:
                    typed.append(part["text"])
            elif kind == "functionCall":
                if not calls:
                    first_call_signed = bool(part.get("thoughtSignature"))
                calls += 1
                self.chars += len(orjson.dumps(part[kind].get("args", {})))
            elif kind == "functionResponse":
                responses.append(orjson.dumps(part[kind]["response"]).decode())
        self._check_pairing(len(responses))
        self._previous_calls = calls if role == "model" else 0
        self.chars += sum(map(len, typed)) + sum(map(len, responses))
        if role == "user":
            self.user_text = "".join(typed)
            self.quoted = "".join(responses + typed)
            if typed:  # a new turn starts: only its own steps are checked
                self.unsigned_call_at = None
        elif calls and not first_call_signed and self.unsigned_call_at is None:
            self.unsigned_call_at = index

    def _check_pairing(self, responses: int) -> None:
        if not responses:
            return
        if not self._previous_calls:
            raise invalid_argument(
                "Please ensure that function response turn comes immediately after a function "
                "call turn."
            )
        if responses != self._previous_calls:
            raise invalid_argument(
                "Please ensure that the number of function response parts is equal to the number "
                "of function call parts of the function call turn."
            )


def _data_field(part: dict[str, Any], where: str) -> str:
    data = [name for name in part if name in _PART_DATA]
    if len(data) != 1:
        raise _field_error(
            f"{where}.data", "required oneof field 'data' must have one initialized field"
        )
    kind = data[0]
    value = part[kind]
    if kind == "text" and not isinstance(value, str):
        raise _field_error(f"{where}.text", "text must be a string")
    if kind == "functionCall" and not (
        isinstance(value, dict) and isinstance(value.get("name"), str)
    ):
        raise _field_error(f"{where}.function_call.name", "name is not specified")
    if kind == "functionResponse" and not (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and isinstance(value.get("response"), dict)
    ):
        raise _field_error(f"{where}.function_response", "name and response are required")
    if kind == "inlineData" and not (
        isinstance(value, dict)
        and isinstance(value.get("mimeType", value.get("mime_type")), str)
        and isinstance(value.get("data"), str)
    ):
        raise _field_error(f"{where}.inline_data", "mime_type and data are required")
    return kind


def _system_text(raw: Any) -> str:
    if raw is None:
        return ""
    content = _fields(raw, frozenset({"role", "parts"}), "system_instruction")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _field_error("system_instruction.parts", "contents.parts must not be empty.")
    texts = []
    for position, raw_part in enumerate(parts):
        part = _fields(raw_part, _PART_FIELDS, f"system_instruction.parts[{position}]")
        if not isinstance(part.get("text"), str):
            raise _field_error(
                f"system_instruction.parts[{position}]",
                "only text is allowed in a system instruction",
            )
        texts.append(part["text"])
    return "".join(texts)


@dataclass(frozen=True, slots=True)
class _Config:
    max_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    candidates: int = 1


def _int_in(config: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = config.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _field_error(f"generation_config.{name}", f"must be an integer from {low} to {high}")
    return value


def _number_in(config: dict[str, Any], name: str, high: float) -> None:
    value = config.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise _field_error(f"generation_config.{name}", f"must be a number from 0 to {high:g}")


def _config(raw: Any) -> _Config:
    if raw is None:
        return _Config()
    config = _fields(raw, _GENERATION_FIELDS, "generation_config")
    _number_in(config, "temperature", 2.0)
    _number_in(config, "topP", 1.0)
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _field_error("generation_config.stop_sequences", "must be a list of strings")
    if len(stops) > _MAX_STOP_SEQUENCES:
        raise _field_error(
            "generation_config.stop_sequences", f"at most {_MAX_STOP_SEQUENCES} are allowed"
        )
    return _Config(
        max_tokens=_int_in(config, "maxOutputTokens", 1, 1_000_000),
        stop_sequences=tuple(stops),
        candidates=_int_in(config, "candidateCount", 1, 8) or 1,
    )


def _declarations(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid_argument("Invalid JSON payload received. 'tools' must be a list.")
    declarations = []
    for index, raw_tool in enumerate(raw):
        tool = _fields(raw_tool, _TOOL_FIELDS, f"tools[{index}]")
        found = tool.get("functionDeclarations") or []
        if not isinstance(found, list):
            raise _field_error(f"tools[{index}].function_declarations", "must be a list")
        for position, raw_declaration in enumerate(found):
            where = f"tools[{index}].function_declarations[{position}]"
            declaration = _fields(raw_declaration, _DECLARATION_FIELDS, where)
            name = declaration.get("name")
            if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
                raise _field_error(
                    f"{where}.name",
                    "Invalid function name. Must start with a letter or an underscore. Must be "
                    "alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes "
                    "(-), with a maximum length of 64.",
                )
            declarations.append(declaration)
    return declarations


def _calling_mode(raw: Any) -> tuple[str, list[str]]:
    if raw is None:
        return "AUTO", []
    config = _fields(raw, frozenset({"functionCallingConfig"}), "tool_config")
    calling = _fields(
        config.get("functionCallingConfig") or {},
        frozenset({"mode", "allowedFunctionNames"}),
        "tool_config.function_calling_config",
    )
    mode = calling.get("mode", "AUTO")
    if mode not in _MODES:
        raise _field_error("tool_config.function_calling_config.mode", f"invalid value {mode!r}")
    allowed = calling.get("allowedFunctionNames", [])
    if not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed):
        raise _field_error(
            "tool_config.function_calling_config.allowed_function_names", "must be a list"
        )
    return str(mode), allowed


def _tool_call(payload: dict[str, Any], user_text: str) -> ToolCall | None:
    declarations = _declarations(payload.get("tools"))
    mode, allowed = _calling_mode(payload.get("toolConfig"))
    by_name = {d["name"]: d for d in declarations}
    for name in allowed:
        if name not in by_name:
            raise invalid_argument(f"allowed_function_names: {name!r} is not a declared function")
    if not wants_tool(user_text, bool(declarations), mode == "ANY", mode == "NONE"):
        return None
    chosen = by_name[allowed[0]] if allowed else declarations[0]
    schema = chosen.get("parametersJsonSchema") or chosen.get("parameters")
    return ToolCall(chosen["name"], tool_arguments(schema))


def parse_generate(payload: dict[str, Any], model: str, stream: bool) -> NativeRequest:
    """A ``generateContent``/``streamGenerateContent`` body (the model comes from the URL)."""
    request = _fields(payload, _REQUEST_FIELDS, "")
    walk = _Contents()
    count = walk.walk(request.get("contents"))
    system = _system_text(request.get("systemInstruction"))
    config = _config(request.get("generationConfig"))
    messages = count + (1 if system else 0)
    if walk.unsigned_call_at is not None and model.startswith("gemini-3"):
        raise invalid_argument(
            "Function call is missing a thought_signature in functionCall parts. This is "
            "required for tools to work correctly, and missing thought_signature may lead to "
            f"degraded model performance. Additional data, position {walk.unsigned_call_at}. "
            "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more "
            "details."
        )
    return NativeRequest(
        model=model,
        stream=stream,
        max_tokens=config.max_tokens,
        prompt_tokens=estimate_tokens(walk.chars + len(system))
        + MESSAGE_OVERHEAD_TOKENS * messages,
        quoted=walk.quoted,
        stop_sequences=config.stop_sequences,
        tool_call=_tool_call(request, walk.user_text),
        blocked=SAFETY_TRIGGER in walk.user_text,
        candidates=config.candidates,
    )


def parse_count_tokens(payload: dict[str, Any], model: str) -> int:
    """A ``countTokens`` body: ``contents`` or a whole ``generateContentRequest``."""
    request = _fields(payload, frozenset({"contents", "generateContentRequest"}), "")
    inner = request.get("generateContentRequest")
    if inner is not None:
        if not isinstance(inner, dict):
            raise invalid_argument("generate_content_request must be an object")
        inner = {k: v for k, v in inner.items() if k != "model"}
        return parse_generate(inner, model, False).prompt_tokens
    return parse_generate({"contents": request.get("contents")}, model, False).prompt_tokens


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """The texts to embed, their token estimate and the requested vector size (None: default)."""

    texts: list[str]
    prompt_tokens: int
    dimensions: list[int | None]


def _embed_one(raw: Any, model: str, parent: str, require_model: bool) -> tuple[str, int | None]:
    label = "BatchEmbedContentsRequest." + parent if parent else "EmbedContentRequest"
    request = _fields(raw, _EMBED_FIELDS, parent)
    named = request.get("model")
    if named is None and require_model:
        raise invalid_argument(f"* {label}.model: model is not specified\n")
    if named is not None and named != f"models/{model}":
        raise invalid_argument(
            f"* {label}.model: {named!r} does not match the model in the URL (models/{model})\n"
        )
    content = request.get("content")
    if content is None:
        raise invalid_argument(f"* {label}.content: content is not specified\n")
    parts = _fields(content, frozenset({"role", "parts"}), f"{parent}.content".lstrip(".")).get(
        "parts"
    )
    if not isinstance(parts, list) or not parts:
        raise invalid_argument(f"* {label}.content.parts: contents.parts must not be empty.\n")
    texts = []
    for position, raw_part in enumerate(parts):
        part = _fields(raw_part, _PART_FIELDS, f"{parent}.content.parts[{position}]".lstrip("."))
        if not isinstance(part.get("text"), str):
            raise invalid_argument(
                f"* {label}.content.parts[{position}]: only text can be embedded\n"
            )
        texts.append(part["text"])
    dimensions = request.get("outputDimensionality")
    if dimensions is not None and (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or not 1 <= dimensions <= 3072
    ):
        raise invalid_argument(f"* {label}.output_dimensionality: must be from 1 to 3072\n")
    return "".join(texts), dimensions


def parse_embed(payload: dict[str, Any], model: str) -> EmbedRequest:
    """An ``embedContent`` body."""
    text, dimensions = _embed_one(payload, model, "", require_model=False)
    return EmbedRequest([text], estimate_tokens(len(text)), [dimensions])


def parse_batch_embed(payload: dict[str, Any], model: str) -> EmbedRequest:
    """A ``batchEmbedContents`` body: every request names the URL's model."""
    body = _fields(payload, frozenset({"requests"}), "")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid_argument("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    if len(requests) > _MAX_BATCH:
        raise invalid_argument(
            f"* BatchEmbedContentsRequest.requests: at most {_MAX_BATCH} requests can be in one "
            "batch\n"
        )
    items = [
        _embed_one(raw, model, f"requests[{i}]", require_model=True)
        for i, raw in enumerate(requests)
    ]
    texts = [text for text, _ in items]
    tokens = sum(estimate_tokens(len(text)) for text in texts)
    return EmbedRequest(texts, tokens, [dimensions for _, dimensions in items])
