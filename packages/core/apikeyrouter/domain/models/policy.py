"""Routing policies: what an operator declares, and what one request ends up with.

Operators steer the router with data, not code, so a policy has to be checkable before it is
live: every model here forbids unknown fields (a typo must not silently do nothing) and rejects
settings that cannot mean anything at their scope, naming the field and the reason.

``Policy`` is the declaration; ``ResolvedPolicy`` is the outcome for one request after the
precedence rules ran (see ``PolicyEngine``). ``ResolvedPolicy.allows`` runs once per candidate key
on the hot path, so it only reads sets that were precomputed when the resolution was built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.utils.exceptions import InvalidRequestError

ScopeKind = Literal["default", "global", "provider", "key", "client"]

#: Precedence of each scope: a higher level overrides a lower one for request-level settings.
SCOPE_LEVELS: Mapping[str, int] = {"default": 0, "global": 1, "provider": 2, "key": 3, "client": 3}
_NAMED_SCOPES = frozenset({"provider", "key", "client"})
#: Settings decided once per request, before any key is chosen.
REQUEST_LEVEL_FIELDS = ("objective", "fallback", "retry", "budgets", "client_limits")

NonEmptyStr = Annotated[str, Field(min_length=1)]


class PolicyScope(BaseModel):
    """Who a policy applies to. Also written compactly: ``"global"``, ``"client:team-a"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ScopeKind
    value: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_compact(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        kind, sep, value = data.strip().partition(":")
        if kind not in SCOPE_LEVELS:
            raise ValueError(
                f"unknown scope {data!r}: expected default, global, provider:<provider id>, "
                "key:<key id> or client:<client id>"
            )
        if kind in _NAMED_SCOPES and not value:
            raise ValueError(f"scope {kind!r} needs a value: write {kind}:<{kind} id>")
        if kind not in _NAMED_SCOPES and sep:
            raise ValueError(f"scope {kind!r} applies to everything and takes no value")
        return {"kind": kind, "value": value or None}

    @model_validator(mode="after")
    def _value_matches_kind(self) -> Self:
        if self.kind in _NAMED_SCOPES and self.value is None:
            raise ValueError(f"a {self.kind} scope needs a value (the {self.kind} id)")
        if self.kind not in _NAMED_SCOPES and self.value is not None:
            raise ValueError(f"a {self.kind} scope applies to everything and takes no value")
        return self

    @model_serializer
    def _compact(self) -> str:
        # Serialised the way operators write it, so a dumped policy loads back unchanged.
        return str(self)

    @property
    def level(self) -> int:
        return SCOPE_LEVELS[self.kind]

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value}"


class RetrySettings(BaseModel):
    """How hard the router tries for one request; unset fields fall through to lower scopes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = Field(default=None, ge=1)
    deadline_seconds: float | None = Field(default=None, gt=0)


class ClientLimits(BaseModel):
    """Per-client rate limits; unset fields fall through to lower scopes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class FallbackStep(BaseModel):
    """One step of a fallback chain: another model, optionally pinned to a provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: NonEmptyStr
    provider: NonEmptyStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_model_name(cls, data: Any) -> Any:
        return {"model": data} if isinstance(data, str) else data

    def __str__(self) -> str:
        return self.model if self.provider is None else f"{self.model}@{self.provider}"


def _scope_of(info: ValidationInfo) -> PolicyScope | None:
    scope = info.data.get("scope")
    return scope if isinstance(scope, PolicyScope) else None


class Policy(BaseModel):
    """One declarative routing policy.

    Key filters only ever narrow the set of usable keys; request-level settings (objective,
    fallback, retry, budgets, client limits) are overridden by higher scopes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    scope: PolicyScope
    description: str = ""
    enabled: bool = True
    priority: int = 0
    models: list[NonEmptyStr] | None = Field(
        default=None, min_length=1, description="Applies only to these request models."
    )
    objective: RoutingObjective | None = None
    allow_providers: list[NonEmptyStr] | None = None
    deny_providers: list[NonEmptyStr] | None = None
    allow_keys: list[NonEmptyStr] | None = None
    deny_keys: list[NonEmptyStr] | None = None
    require_tags: list[NonEmptyStr] | None = None
    deny_tags: list[NonEmptyStr] | None = None
    fallback: list[FallbackStep] | None = None
    retry: RetrySettings | None = None
    budgets: list[NonEmptyStr] | None = None
    client_limits: ClientLimits | None = None

    @field_validator(*REQUEST_LEVEL_FIELDS)
    @classmethod
    def _request_level_needs_request_scope(cls, value: Any, info: ValidationInfo) -> Any:
        scope = _scope_of(info)
        if value is not None and scope is not None and scope.kind == "key":
            raise ValueError(
                f"{info.field_name} is a request-level setting: it is decided before any key is "
                "chosen, so a key-scoped policy cannot set it (put it on a default, global, "
                "provider or client policy)"
            )
        return value

    @field_validator("allow_providers", "deny_providers")
    @classmethod
    def _provider_filters_need_wide_scope(cls, value: Any, info: ValidationInfo) -> Any:
        scope = _scope_of(info)
        if value is not None and scope is not None and scope.kind in ("provider", "key"):
            raise ValueError(
                f"{info.field_name} has no meaning on a {scope.kind}-scoped policy: the scope "
                "already fixes the provider (restrict providers with a default, global or "
                "client policy)"
            )
        return value

    @field_validator("allow_keys", "deny_keys")
    @classmethod
    def _key_scope_names_only_its_key(cls, value: Any, info: ValidationInfo) -> Any:
        scope = _scope_of(info)
        if value and scope is not None and scope.kind == "key":
            others = sorted(set(value) - {scope.value})
            if others:
                raise ValueError(
                    f"a key-scoped policy only applies to key {scope.value!r}, so "
                    f"{', '.join(others)} in {info.field_name} would have no effect "
                    "(use a default, global, provider or client policy)"
                )
        return value

    @field_validator("deny_providers", "deny_keys", "deny_tags")
    @classmethod
    def _deny_does_not_contradict_allow(cls, value: Any, info: ValidationInfo) -> Any:
        partner = (
            "require_tags"
            if info.field_name == "deny_tags"
            else "allow_" + str(info.field_name).removeprefix("deny_")
        )
        other = info.data.get(partner)
        if value and other:
            both = sorted(set(value) & set(other))
            if both:
                raise ValueError(
                    f"{', '.join(both)} is in both {partner} and {info.field_name}: "
                    "no key could ever satisfy this policy"
                )
        return value

    @property
    def level(self) -> int:
        return self.scope.level

    @property
    def label(self) -> str:
        """How notes refer to this policy: ``'team-a' (client)``."""
        return f"{self.name!r} ({self.scope.kind})"

    def sets_request_level(self) -> bool:
        return any(getattr(self, name) is not None for name in REQUEST_LEVEL_FIELDS)

    def key_filter(self) -> KeyFilter | None:
        """This policy's key filters as sets, or None when it filters nothing."""
        result = KeyFilter(
            allow_providers=_opt_set(self.allow_providers),
            deny_providers=frozenset(self.deny_providers or ()),
            allow_keys=_opt_set(self.allow_keys),
            deny_keys=frozenset(self.deny_keys or ()),
            require_tags=frozenset(self.require_tags or ()),
            deny_tags=frozenset(self.deny_tags or ()),
        )
        return None if result.is_open else result


def _opt_set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


class PolicyDocument(BaseModel):
    """A whole policy file: ``{"policies": [...]}``. Names identify policies, so they are unique."""

    model_config = ConfigDict(extra="forbid")

    policies: list[Policy] = Field(default_factory=list)

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, policies: list[Policy]) -> list[Policy]:
        first: dict[str, int] = {}
        for index, policy in enumerate(policies):
            if policy.name in first:
                raise ValueError(
                    f"duplicate policy name {policy.name!r} at policies[{first[policy.name]}] "
                    f"and policies[{index}]"
                )
            first[policy.name] = index
        return policies


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Key filters as sets. ``None`` allow lists mean "no restriction"."""

    allow_providers: frozenset[str] | None = None
    deny_providers: frozenset[str] = frozenset()
    allow_keys: frozenset[str] | None = None
    deny_keys: frozenset[str] = frozenset()
    require_tags: frozenset[str] = frozenset()
    deny_tags: frozenset[str] = frozenset()

    @property
    def is_open(self) -> bool:
        return (
            self.allow_providers is None
            and self.allow_keys is None
            and not self.deny_providers
            and not self.deny_keys
            and not self.require_tags
            and not self.deny_tags
        )

    def admits(self, key: APIKey) -> bool:
        allow = self.allow_providers
        provider_id = key.provider_id
        if (allow is not None and provider_id not in allow) or provider_id in self.deny_providers:
            return False
        return self.admits_key(key.id, key.tags)

    def admits_key(self, key_id: str, tags: frozenset[str]) -> bool:
        """The key and tag checks only (the caller checked the provider): set look-ups, no
        allocation, because this runs for every candidate key of every request."""
        allow = self.allow_keys
        if (allow is not None and key_id not in allow) or key_id in self.deny_keys:
            return False
        required = self.require_tags
        if required and not required <= tags:
            return False
        denied = self.deny_tags
        return not denied or denied.isdisjoint(tags)

    def why_not(self, key: APIKey) -> str | None:
        """The first reason this filter rejects ``key``, in words, or None."""
        if self.allow_providers is not None and key.provider_id not in self.allow_providers:
            return f"provider {key.provider_id} not allowed"
        if key.provider_id in self.deny_providers:
            return f"provider {key.provider_id} denied"
        if self.allow_keys is not None and key.id not in self.allow_keys:
            return f"key {key.id} not allowed"
        if key.id in self.deny_keys:
            return f"key {key.id} denied"
        missing = self.require_tags - key.tags
        if missing:
            return f"missing tag(s) {', '.join(sorted(missing))} required"
        denied = self.deny_tags & key.tags
        if denied:
            return f"tag(s) {', '.join(sorted(denied))} denied"
        return None

    def narrowed_by(self, other: KeyFilter) -> KeyFilter:
        """Both filters at once: allow lists intersect, deny lists and tags union."""
        return KeyFilter(
            allow_providers=_intersect(self.allow_providers, other.allow_providers),
            deny_providers=self.deny_providers | other.deny_providers,
            allow_keys=_intersect(self.allow_keys, other.allow_keys),
            deny_keys=self.deny_keys | other.deny_keys,
            require_tags=self.require_tags | other.require_tags,
            deny_tags=self.deny_tags | other.deny_tags,
        )


def _intersect(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


OPEN_FILTER = KeyFilter()


def merge_filters(filters: Iterable[KeyFilter]) -> KeyFilter:
    result = OPEN_FILTER
    for item in filters:
        result = result.narrowed_by(item)
    return result


@dataclass(frozen=True, slots=True)
class FilterRule:
    """One policy's key filter and what it applies to (all keys, one provider, one key)."""

    policy: str
    scope_kind: str
    filter: KeyFilter
    provider: str | None = None
    key: str | None = None

    @property
    def label(self) -> str:
        return f"{self.policy!r} ({self.scope_kind})"


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    """The effective policy for one request: settings, key filters, and how they came about.

    ``sources`` maps a setting to the policy (or comma-separated policies) that set it;
    ``notes`` explains every conflict that precedence resolved; ``rules`` keeps each policy's
    filter so ``why_excluded`` can name the policy that excluded a key.
    """

    objective: RoutingObjective | None = None
    fallback: tuple[FallbackStep, ...] = ()
    max_attempts: int | None = None
    deadline_seconds: float | None = None
    budgets: tuple[str, ...] = ()
    client_limits: ClientLimits | None = None
    allow_providers: frozenset[str] | None = None
    deny_providers: frozenset[str] = frozenset()
    allow_keys: frozenset[str] | None = None
    deny_keys: frozenset[str] = frozenset()
    require_tags: frozenset[str] = frozenset()
    deny_tags: frozenset[str] = frozenset()
    provider_filters: Mapping[str, KeyFilter] = field(default_factory=dict)
    key_filters: Mapping[str, KeyFilter] = field(default_factory=dict)
    rules: tuple[FilterRule, ...] = ()
    applied: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _unrestricted: bool = field(init=False, repr=False, compare=False)
    _by_provider: dict[str, KeyFilter | None] = field(init=False, repr=False, compare=False)
    _other_providers: KeyFilter | None = field(init=False, repr=False, compare=False)
    _by_key: dict[str, KeyFilter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Fold the provider checks and provider overlays into one filter per provider, so
        # ``allows`` does one dict look-up per key instead of walking the rules.
        rest = KeyFilter(
            allow_keys=self.allow_keys,
            deny_keys=self.deny_keys,
            require_tags=self.require_tags,
            deny_tags=self.deny_tags,
        )
        allowed = self.allow_providers
        named = set(self.provider_filters) | set(allowed or ()) | set(self.deny_providers)
        by_provider: dict[str, KeyFilter | None] = {}
        for provider in named:
            if (allowed is not None and provider not in allowed) or (
                provider in self.deny_providers
            ):
                by_provider[provider] = None
            else:
                overlay = self.provider_filters.get(provider)
                by_provider[provider] = rest if overlay is None else rest.narrowed_by(overlay)
        unrestricted = (
            allowed is None
            and not self.deny_providers
            and rest.is_open
            and all(f.is_open for f in self.provider_filters.values())
            and all(f.is_open for f in self.key_filters.values())
        )
        object.__setattr__(self, "_unrestricted", unrestricted)
        object.__setattr__(self, "_by_provider", by_provider)
        object.__setattr__(self, "_other_providers", None if allowed is not None else rest)
        object.__setattr__(self, "_by_key", dict(self.key_filters))

    @property
    def allows_everything(self) -> bool:
        """True when no filter applies, so callers can skip :meth:`allows` per key."""
        return self._unrestricted

    def allows(self, key: APIKey) -> bool:
        """Whether policy lets ``key`` serve this request. Hot path: look-ups, no allocation."""
        if self._unrestricted:
            return True
        base = self._by_provider.get(key.provider_id, self._other_providers)
        if base is None:
            return False
        key_id, tags = key.id, key.tags
        if not base.admits_key(key_id, tags):
            return False
        own = self._by_key.get(key_id)
        return own is None or own.admits_key(key_id, tags)

    def why_excluded(self, key: APIKey) -> str | None:
        """Which policy excludes ``key`` and why, e.g. "tag(s) preview denied by 'x' (global)"."""
        for rule in self.rules:
            if rule.provider is not None and rule.provider != key.provider_id:
                continue
            if rule.key is not None and rule.key != key.id:
                continue
            reason = rule.filter.why_not(key)
            if reason is not None:
                return f"{reason} by {rule.label}"
        return None

    def settings(self) -> dict[str, JsonValue]:
        """The request-level settings as JSON values (what a dry run compares)."""
        return {
            "objective": None if self.objective is None else self.objective.value,
            "fallback": [str(step) for step in self.fallback],
            "max_attempts": self.max_attempts,
            "deadline_seconds": self.deadline_seconds,
            "budgets": list(self.budgets),
            "client_limits": None
            if self.client_limits is None
            else self.client_limits.model_dump(),
        }

    def to_dict(self) -> dict[str, JsonValue]:
        """A JSON-able explanation for management APIs and logs."""

        def filter_dict(f: KeyFilter) -> dict[str, JsonValue]:
            out: dict[str, JsonValue] = {}
            for name in ("allow_providers", "allow_keys"):
                value = getattr(f, name)
                if value is not None:
                    out[name] = sorted(value)
            for name in ("deny_providers", "deny_keys", "require_tags", "deny_tags"):
                value = getattr(f, name)
                if value:
                    out[name] = sorted(value)
            return out

        base = KeyFilter(
            self.allow_providers,
            self.deny_providers,
            self.allow_keys,
            self.deny_keys,
            self.require_tags,
            self.deny_tags,
        )
        return {
            **self.settings(),
            "filters": filter_dict(base),
            "provider_filters": {
                p: filter_dict(f) for p, f in sorted(self.provider_filters.items())
            },
            "key_filters": {k: filter_dict(f) for k, f in sorted(self.key_filters.items())},
            "applied": list(self.applied),
            "sources": dict(self.sources),
            "notes": list(self.notes),
        }


#: What a request gets when no policy applies: every key allowed, nothing set.
UNRESTRICTED = ResolvedPolicy()


# ---- dry run report ----------------------------------------------------------------------------


class SettingChange(BaseModel):
    setting: str
    before: JsonValue
    after: JsonValue


class KeyImpact(BaseModel):
    key_id: str
    provider_id: str
    reason: str | None = Field(
        default=None,
        description="Why the key is excluded (after, for newly excluded; before, for newly "
        "allowed).",
    )


class RequestImpact(BaseModel):
    model: str
    client_id: str | None
    providers: list[str]
    affected: bool
    changes: list[SettingChange] = Field(default_factory=list)
    newly_excluded: list[KeyImpact] = Field(default_factory=list)
    newly_allowed: list[KeyImpact] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="Resolution notes that appear only after the change."
    )


class DryRunReport(BaseModel):
    """What upserting some policies would change, without changing anything."""

    candidates: list[str]
    replaces: list[str]
    requests_checked: int
    requests_affected: int
    keys_affected: list[str]
    requests: list[RequestImpact]
    summary: list[str]


# ---- validation errors -------------------------------------------------------------------------


class PolicyProblem(BaseModel):
    """One thing wrong with a policy document, located as precisely as the input allows."""

    model_config = ConfigDict(frozen=True)

    source: str
    line: int | None = None
    column: int | None = None
    path: str = ""
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyValidationError(InvalidRequestError):
    """A policy document is invalid. The message lists every problem, one per line."""

    code = "invalid_policy"

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = list(problems)
        first_path = next((p.path for p in self.problems if p.path), None)
        super().__init__("\n".join(str(p) for p in self.problems), param=first_path)
