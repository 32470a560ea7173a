"""What the generic HTTP adapter needs to know about an API, as one declarative model.

Pooling keys for a new API should be a matter of describing it (where the key goes, which headers
carry its quota, what its statuses mean), not of writing an adapter, so that the proxy can take
it from YAML. Unknown fields are refused (``extra="forbid"``) and every check names the field it
concerns, so a typo in a config file becomes a precise error instead of a silently ignored line.

Defaults that depend on another setting (the key prefix, the rate-limit headers, streaming and
the capabilities) are left as ``None`` here and resolved by the ``effective_*`` methods, so a
config that is printed back shows what its author wrote, not what was inferred.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from apikeyrouter.domain.models.outcome import FailureKind
from apikeyrouter.domain.models.provider import ProviderCapabilities
from apikeyrouter.domain.models.request_context import Endpoint

Mode = Literal["raw", "openai"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ResetFormat = Literal["seconds", "duration", "epoch", "rfc3339"]

#: Methods whose request data travels in the query string rather than a JSON body.
QUERY_METHODS: frozenset[str] = frozenset({"GET", "DELETE"})

#: What a status means when the config does not say otherwise. The most specific entry wins
#: (``401`` before ``4xx``); statuses matched by nothing are provider errors.
DEFAULT_STATUS_MAP: dict[str, FailureKind] = {
    "400": FailureKind.BAD_REQUEST,
    "401": FailureKind.INVALID_KEY,
    "402": FailureKind.QUOTA_EXHAUSTED,
    "403": FailureKind.INVALID_KEY,
    "404": FailureKind.BAD_REQUEST,
    "408": FailureKind.TIMEOUT,
    "422": FailureKind.BAD_REQUEST,
    "429": FailureKind.RATE_LIMITED,
    "4xx": FailureKind.BAD_REQUEST,
    "5xx": FailureKind.PROVIDER_ERROR,
}

#: Fields of a caller's body that only steer the router, dropped before a raw API sees them.
RAW_ROUTER_FIELDS: tuple[str, ...] = ("model", "stream", "stream_options")

OPENAI_PATHS: dict[Endpoint, str] = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
}

_STATUS_PATTERN = re.compile(r"^([1-5])(\d\d|xx)$|^([1-5]\d\d)-([1-5]\d\d)$")
# RFC 9110 token characters: what a header (or query parameter) name may safely contain.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TEMPLATE_FIELDS = frozenset({"model"})


@dataclass(frozen=True, slots=True)
class StatusRule:
    """One ``status_map`` entry, as an inclusive range (a single status is a range of one)."""

    low: int
    high: int
    kind: FailureKind

    @property
    def width(self) -> int:
        return self.high - self.low


def parse_status_pattern(pattern: str) -> tuple[int, int]:
    """``"429"`` -> (429, 429); ``"5xx"`` -> (500, 599); ``"500-503"`` -> (500, 503)."""
    match = _STATUS_PATTERN.match(pattern.strip().lower())
    if match is None:
        raise ValueError(
            f"{pattern!r} is not an HTTP status, a range like '5xx' or a span like '500-503'"
        )
    if match.group(3) is not None:
        low, high = int(match.group(3)), int(match.group(4))
        if low > high:
            raise ValueError(f"{pattern!r}: the span's start is after its end")
        return low, high
    if match.group(2) == "xx":
        hundred = int(match.group(1)) * 100
        return hundred, hundred + 99
    status = int(match.group(1) + match.group(2))
    return status, status


def _check_template(template: str, field: str) -> str:
    """Paths are templates whose only placeholder is ``{model}`` (``{{`` for a literal brace)."""
    if template and not template.startswith("/"):
        raise ValueError(f"{field} must be empty or start with '/', got {template!r}")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{field} is not a valid template: {exc}") from None
    unknown = names - _TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"{field} may only use the placeholder {{model}}, not "
            + ", ".join(f"{{{name}}}" for name in sorted(unknown))
        )
    return template


def _check_name(name: str, field: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{field}: {name!r} is not a valid header or parameter name")
    return name


class RateLimitHeaders(BaseModel):
    """Which response headers carry the key's quota, and how their reset times are written.

    ``reset_format``: ``seconds`` (until the reset, e.g. ``30``), ``duration`` (Go style, e.g.
    ``1m30s``; a bare number is seconds), ``epoch`` (an absolute Unix time; values too large
    to be seconds are read as milliseconds) or ``rfc3339``. ``retry-after`` (and
    ``retry-after-ms``) are always honoured without being named here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_limit: str | None = None
    requests_remaining: str | None = None
    requests_reset: str | None = None
    tokens_limit: str | None = None
    tokens_remaining: str | None = None
    tokens_reset: str | None = None
    reset_format: ResetFormat = "seconds"

    @field_validator(
        "requests_limit",
        "requests_remaining",
        "requests_reset",
        "tokens_limit",
        "tokens_remaining",
        "tokens_reset",
    )
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        # Transports hand adapters lower-cased header names.
        return None if value is None else _check_name(value, "rate_limit_headers").lower()


#: OpenAI's own header names, the default of the ``openai`` mode.
OPENAI_RATE_LIMIT_HEADERS = RateLimitHeaders(
    requests_limit="x-ratelimit-limit-requests",
    requests_remaining="x-ratelimit-remaining-requests",
    requests_reset="x-ratelimit-reset-requests",
    tokens_limit="x-ratelimit-limit-tokens",
    tokens_remaining="x-ratelimit-remaining-tokens",
    tokens_reset="x-ratelimit-reset-tokens",
    reset_format="duration",
)


class UsagePaths(BaseModel):
    """Dotted paths into the JSON response (``usage.total_tokens``, ``data.0.cost``).

    A bare string in the config means ``total_tokens``. Without any, usage is zero tokens and
    only requests are counted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: str | None = None
    completion_tokens: str | None = None
    total_tokens: str | None = None

    @field_validator("prompt_tokens", "completion_tokens", "total_tokens")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(not part for part in value.split("."))):
            raise ValueError(f"usage_path: {value!r} is not a dotted path like 'usage.total'")
        return value


class GenericHttpConfig(BaseModel):
    """An HTTP API whose keys the router pools.

    ``mode: raw`` (the default) calls any JSON API: the caller's body goes out as JSON (or as
    query parameters for GET/DELETE) and the answer comes back as a dict. ``mode: openai``
    speaks the OpenAI wire format, for OpenAI-style servers that need what ``OpenAIAdapter``
    cannot express: a key header other than ``Authorization: Bearer``, a key in the query
    string, extra query parameters, or the model in the URL (Azure OpenAI).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1)
    mode: Mode = "raw"
    method: Method = "POST"
    path: str = ""
    paths: dict[Endpoint, str] = Field(default_factory=dict)
    key_in: Literal["header", "query"] = "header"
    key_name: str = "Authorization"
    key_prefix: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    extra_query: dict[str, str] = Field(default_factory=dict)
    model_map: dict[str, str] = Field(default_factory=dict)
    strip_fields: tuple[str, ...] | None = None
    rate_limit_headers: RateLimitHeaders | None = None
    status_map: dict[str, FailureKind] = Field(default_factory=dict)
    body_rules: dict[str, FailureKind] = Field(default_factory=dict)
    usage_path: UsagePaths | None = None
    stream: Literal["none", "sse"] | None = None
    stream_path: str | None = None
    stream_params: dict[str, Any] = Field(default_factory=dict)
    models_path: str = "/models"
    capabilities: ProviderCapabilities | None = None

    # --- field checks -----------------------------------------------------------------------
    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not carry a query or fragment (use extra_query)")
        return value.strip().rstrip("/")

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("path", "stream_path", "models_path")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_template(value, info.field_name or "path")

    @field_validator("paths")
    @classmethod
    def _templates(cls, value: dict[Endpoint, str]) -> dict[Endpoint, str]:
        for endpoint, template in value.items():
            _check_template(template, f"paths.{endpoint.value}")
        return value

    @field_validator("key_name")
    @classmethod
    def _key_name(cls, value: str) -> str:
        return _check_name(value, "key_name")

    @field_validator("extra_headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            _check_name(name, "extra_headers")
            if "\r" in header or "\n" in header:
                raise ValueError(f"extra_headers: the value of {name!r} contains a line break")
        return value

    @field_validator("status_map", mode="before")
    @classmethod
    def _status_keys(cls, value: object) -> object:
        # YAML reads an unquoted 429 as an int.
        if isinstance(value, dict):
            return {str(status): kind for status, kind in value.items()}
        return value

    @field_validator("status_map")
    @classmethod
    def _statuses(cls, value: dict[str, FailureKind]) -> dict[str, FailureKind]:
        for pattern in value:
            try:
                parse_status_pattern(pattern)
            except ValueError as exc:
                raise ValueError(f"status_map: {exc}") from None
        return value

    @field_validator("body_rules")
    @classmethod
    def _rules(cls, value: dict[str, FailureKind]) -> dict[str, FailureKind]:
        if any(not text.strip() for text in value):
            raise ValueError("body_rules: an empty substring would match every body")
        return value

    @field_validator("usage_path", mode="before")
    @classmethod
    def _usage_shorthand(cls, value: object) -> object:
        return {"total_tokens": value} if isinstance(value, str) else value

    # --- cross-field checks (messages name the field: the error's location is the model) ----
    @model_validator(mode="after")
    def _consistent(self) -> GenericHttpConfig:
        key = self.key_name.lower()
        if self.key_in == "header" and key in {name.lower() for name in self.extra_headers}:
            raise ValueError(f"extra_headers: {self.key_name!r} is where the key goes")
        if self.key_in == "query" and key in {name.lower() for name in self.extra_query}:
            raise ValueError(f"extra_query: {self.key_name!r} is where the key goes")
        if self.mode == "openai" and self.method != "POST":
            raise ValueError("method: the openai mode always POSTs; leave method out")
        caps = self.capabilities
        claims_streaming = caps is not None and "streaming" in caps.model_fields_set
        if claims_streaming and caps is not None and caps.streaming and not self.streams:
            raise ValueError("capabilities: streaming needs `stream: sse`")
        if not self.streams and (self.stream_path is not None or self.stream_params):
            raise ValueError("stream_path/stream_params: streaming is off (set `stream: sse`)")
        return self

    # --- resolved defaults ------------------------------------------------------------------
    @property
    def streams(self) -> bool:
        """SSE streaming: on by default in the openai mode, opt-in (``stream: sse``) in raw."""
        if self.stream is None:
            return self.mode == "openai"
        return self.stream == "sse"

    def effective_key_prefix(self) -> str:
        """An ``Authorization`` header carries a scheme, so it defaults to ``Bearer ``."""
        if self.key_prefix is not None:
            return self.key_prefix
        if self.key_in == "header" and self.key_name.lower() == "authorization":
            return "Bearer "
        return ""

    def effective_strip_fields(self) -> frozenset[str]:
        if self.strip_fields is not None:
            return frozenset(self.strip_fields)
        return frozenset() if self.mode == "openai" else frozenset(RAW_ROUTER_FIELDS)

    def effective_rate_limit_headers(self) -> RateLimitHeaders | None:
        if self.rate_limit_headers is not None or self.mode == "raw":
            return self.rate_limit_headers
        return OPENAI_RATE_LIMIT_HEADERS

    def path_for(self, endpoint: Endpoint, stream: bool) -> str | None:
        """The path template for a call, or None when this API has no such endpoint."""
        if stream and self.stream_path is not None:
            return self.stream_path
        if endpoint in self.paths:
            return self.paths[endpoint]
        if self.mode == "openai":
            return OPENAI_PATHS[endpoint]
        return self.path if endpoint in (Endpoint.CHAT, Endpoint.RAW) else None

    def effective_capabilities(self) -> ProviderCapabilities:
        """Raw APIs serve "chat" in the sense of "a generic call"; nothing more is claimed."""
        caps = self.capabilities
        if caps is not None:
            # Streaming follows `stream` unless stated: ProviderCapabilities defaults it to on.
            if "streaming" in caps.model_fields_set:
                return caps
            return caps.model_copy(update={"streaming": self.streams})
        if self.mode == "openai":
            return ProviderCapabilities(
                chat=True,
                completions=True,
                embeddings=True,
                streaming=self.streams,
                tools=True,
                vision=True,
                list_models=True,
            )
        return ProviderCapabilities(
            chat=True,
            completions=Endpoint.COMPLETIONS in self.paths,
            embeddings=Endpoint.EMBEDDINGS in self.paths,
            streaming=self.streams,
            tools=False,
            vision=False,
            list_models=False,
            raw=True,
        )

    def status_rules(self, *, with_defaults: bool = True) -> tuple[StatusRule, ...]:
        """``status_map`` over the defaults (same pattern replaces), most specific first."""
        ranked: list[tuple[int, int, StatusRule]] = []
        defaults = DEFAULT_STATUS_MAP if with_defaults else {}
        for source, table in ((0, self.status_map), (1, defaults)):
            for pattern, kind in table.items():
                if source and pattern in self.status_map:
                    continue  # replaced by the config
                rule = StatusRule(*parse_status_pattern(pattern), kind)
                ranked.append((rule.width, source, rule))  # at equal width, the config's wins
        ranked.sort(key=lambda item: item[:2])
        return tuple(rule for _, _, rule in ranked)


def kind_for_status(rules: tuple[StatusRule, ...], status: int) -> FailureKind | None:
    """The first (most specific) rule covering ``status``."""
    for rule in rules:
        if rule.low <= status <= rule.high:
            return rule.kind
    return None
