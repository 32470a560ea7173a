"""Resolves the declarative policies into the effective policy for one request.

Precedence is default < global < provider < key/client. Two kinds of settings combine
differently, because they answer different questions:

* request-level settings (objective, fallback chain, retry, budgets, client limits) have one
  value per request, so the most specific policy wins: higher level, then higher ``priority``,
  then the alphabetically first name. Budgets are the exception: every budget in scope applies,
  so they are unioned. Provider-scoped values count only when exactly one provider can serve
  the request (otherwise "the provider's objective" is not defined yet).
* key filters are restrictions, so no policy can widen another: allow lists intersect, deny
  lists and tag requirements union. Provider-scoped filters apply to that provider's keys only,
  key-scoped ones to that key.

Every conflict that precedence settles is written into ``ResolvedPolicy.notes``, so an operator
can see why a request got its settings. Resolutions are cached; the cache key ignores request
facts no policy mentions, which keeps it small however many models or clients callers invent.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.domain.models.policy import (
    ClientLimits,
    DryRunReport,
    FilterRule,
    KeyImpact,
    Policy,
    PolicyProblem,
    PolicyValidationError,
    RequestImpact,
    ResolvedPolicy,
    SettingChange,
    merge_filters,
)
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.utils.bounded_cache import remember
from apikeyrouter.utils.duplicates import repeated

T = TypeVar("T")
_CacheKey = tuple[str | None, str | None, frozenset[str]]
#: Safety valve: provider sets come from callers of ``resolve``; never let the cache grow forever.
MAX_CACHE_ENTRIES = 4096
#: The model a dry run uses for "any model no policy names".
ANY_MODEL = "*"
_REQUEST_KINDS = frozenset({"default", "global", "client"})
_FILTER_ATTRS = (
    "allow_providers",
    "deny_providers",
    "allow_keys",
    "deny_keys",
    "require_tags",
    "deny_tags",
)


def _authority(policy: Policy) -> tuple[int, int, str]:
    """Sort key putting the policy that wins a conflict first."""
    return (-policy.level, -policy.priority, policy.name)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(str(v) for v in value)) + "}"
    return str(value)


@dataclass(slots=True)
class _Trail:
    """Collects ``sources`` and ``notes`` while one resolution is built."""

    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def pick(self, setting: str, offers: Sequence[tuple[Policy, T]]) -> T | None:
        """The value from the most authoritative policy; notes every value it overrides."""
        if not offers:
            return None
        winner, value = offers[0]
        self.sources[setting] = winner.name
        overridden = []
        for loser, other in offers[1:]:
            if other == value:
                continue
            text = f"{_fmt(other)} from {loser.label}"
            if loser.level == winner.level:
                if loser.priority != winner.priority:
                    text += f" [same level, priority {winner.priority} > {loser.priority}]"
                else:
                    text += f" [same level and priority, {winner.name!r} sorts first]"
            overridden.append(text)
        if overridden:
            self.notes.append(
                f"{setting}={_fmt(value)} from {winner.label} overrides " + ", ".join(overridden)
            )
        return value

    def filters(self, prefix: str, rules: Sequence[FilterRule], base: Sequence[FilterRule]) -> None:
        """Sources and conflict notes for one group of key filters (all keys, a provider, a key).

        ``base`` are the rules for all keys, which also bind this group: a note is written when
        a policy of this group disagrees with one of them, but not for conflicts among ``base``
        alone (those are noted once, for the group of all keys).
        """
        if not rules:
            return
        label = prefix.rstrip(".") + " " if prefix else ""
        for attr in _FILTER_ATTRS:
            if attr.startswith("allow_"):
                setters = [r for r in rules if getattr(r.filter, attr) is not None]
            else:
                setters = [r for r in rules if getattr(r.filter, attr)]
            if setters:
                self.sources[prefix + attr] = ", ".join(r.policy for r in setters)
        for attr, noun in (("allow_providers", "provider"), ("allow_keys", "key")):
            setters = [r for r in rules if getattr(r.filter, attr) is not None]
            sets = [getattr(r.filter, attr) for r in setters]
            if len(set(sets)) > 1:
                merged = frozenset.intersection(*sets)
                parts = " and ".join(
                    f"{_fmt(s)} from {r.label}" for r, s in zip(setters, sets, strict=True)
                )
                self.notes.append(f"{label}{attr}={_fmt(merged)}: intersection of {parts}")
            elif sets and not sets[0]:
                self.notes.append(
                    f"{label}{attr} is empty in {setters[0].label}: no {noun} is allowed"
                )
        every = [*base, *rules]
        inherited = set(map(id, base))
        pairs = (
            ("allow_providers", "deny_providers", "provider", "is allowed", "deny wins"),
            ("allow_keys", "deny_keys", "key", "is allowed", "deny wins"),
            ("require_tags", "deny_tags", "tag", "is required", "no key can pass"),
        )
        for want_attr, deny_attr, noun, verb, outcome in pairs:
            for denier in every:
                for item in sorted(getattr(denier.filter, deny_attr)):
                    wanter = next(
                        (
                            r
                            for r in every
                            if r is not denier
                            and item in (getattr(r.filter, want_attr) or ())
                            and not (id(r) in inherited and id(denier) in inherited)
                        ),
                        None,
                    )
                    if wanter is not None:
                        self.notes.append(
                            f"{label}{noun} {item} {verb} by {wanter.label} but denied by "
                            f"{denier.label}: {outcome}"
                        )


class PolicyEngine:
    """Holds the policies and resolves them per request. Pure logic, no I/O."""

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        self._policies: dict[str, Policy] = {}
        self._ordered: tuple[Policy, ...] = ()
        self._models: frozenset[str] = frozenset()
        self._clients: frozenset[str] = frozenset()
        self._cache: dict[_CacheKey, ResolvedPolicy] = {}
        self._revision = 0
        self.replace_all(policies)

    # ---- managing policies -------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """Increases on every change, so a caller can tell its copy of a resolution is stale."""
        return self._revision

    def replace_all(self, policies: Iterable[Policy]) -> None:
        fresh: dict[str, Policy] = {}
        problems = []
        for index, policy in enumerate(policies):
            if policy.name in fresh:
                problems.append(
                    PolicyProblem(
                        source="<policies>",
                        path=f"policies[{index}].name",
                        message=f"duplicate policy name {policy.name!r}",
                    )
                )
            fresh[policy.name] = policy
        if problems:
            raise PolicyValidationError(problems)
        self._policies = fresh
        self._changed()

    def upsert(self, policy: Policy) -> Policy | None:
        """Add or replace (by name); returns the policy it replaced, if any."""
        previous = self._policies.get(policy.name)
        self._policies[policy.name] = policy
        self._changed()
        return previous

    def remove(self, name: str) -> bool:
        if self._policies.pop(name, None) is None:
            return False
        self._changed()
        return True

    def get(self, name: str) -> Policy | None:
        return self._policies.get(name)

    def _changed(self) -> None:
        enabled = [p for p in self._policies.values() if p.enabled]
        self._ordered = tuple(sorted(enabled, key=_authority))
        self._models = frozenset(m for p in enabled for m in p.models or ())
        self._clients = frozenset(
            p.scope.value for p in enabled if p.scope.kind == "client" and p.scope.value
        )
        self._cache = {}
        self._revision += 1

    # ---- resolution --------------------------------------------------------------------------

    def resolve(
        self, *, model: str, client_id: str | None = None, providers: Collection[str] = ()
    ) -> ResolvedPolicy:
        """The effective policy for a request.

        ``providers`` are the providers that can serve this request; pass a frozenset (built
        once per model) to keep a cache hit free of allocation.
        """
        key = (
            model if model in self._models else None,
            client_id if client_id in self._clients else None,
            providers if isinstance(providers, frozenset) else frozenset(providers),
        )
        resolved = self._cache.get(key)
        if resolved is None:
            resolved = remember(self._cache, key, self._resolve(*key), MAX_CACHE_ENTRIES)
        return resolved

    def _resolve(
        self, model: str | None, client_id: str | None, providers: frozenset[str]
    ) -> ResolvedPolicy:
        matching = [
            p
            for p in self._ordered
            if (p.models is None or (model is not None and model in p.models))
            and (p.scope.kind != "client" or p.scope.value == client_id)
        ]
        if not matching:
            return ResolvedPolicy()
        trail = _Trail()
        only = next(iter(providers)) if len(providers) == 1 else None
        deciding = []
        for p in matching:
            if p.scope.kind in _REQUEST_KINDS or (
                p.scope.kind == "provider" and p.scope.value == only
            ):
                deciding.append(p)
            elif p.scope.kind == "provider" and p.sets_request_level():
                if not providers:
                    why = "the providers for this request are unknown"
                elif p.scope.value in providers:
                    why = f"{len(providers)} providers can serve this request ({_fmt(providers)})"
                else:
                    continue
                trail.notes.append(f"request-level settings of {p.label} not applied: {why}")
        objective: RoutingObjective | None = trail.pick(
            "objective", [(p, p.objective) for p in deciding if p.objective is not None]
        )
        fallback = trail.pick(
            "fallback", [(p, tuple(p.fallback)) for p in deciding if p.fallback is not None]
        )
        max_attempts = trail.pick(
            "max_attempts",
            [
                (p, p.retry.max_attempts)
                for p in deciding
                if p.retry and p.retry.max_attempts is not None
            ],
        )
        deadline = trail.pick(
            "deadline_seconds",
            [
                (p, p.retry.deadline_seconds)
                for p in deciding
                if p.retry and p.retry.deadline_seconds is not None
            ],
        )
        rpm = trail.pick(
            "client_limits.requests_per_minute",
            [
                (p, p.client_limits.requests_per_minute)
                for p in deciding
                if p.client_limits and p.client_limits.requests_per_minute is not None
            ],
        )
        tpm = trail.pick(
            "client_limits.tokens_per_minute",
            [
                (p, p.client_limits.tokens_per_minute)
                for p in deciding
                if p.client_limits and p.client_limits.tokens_per_minute is not None
            ],
        )
        budgets = self._budgets(deciding, trail)
        base_rules, provider_rules, key_rules = self._rules(matching)
        base = merge_filters(r.filter for r in base_rules)
        trail.filters("", base_rules, ())
        for provider, rules in provider_rules.items():
            trail.filters(f"provider:{provider}.", rules, base_rules)
        for key_id, rules in key_rules.items():
            trail.filters(f"key:{key_id}.", rules, base_rules)
        return ResolvedPolicy(
            objective=objective,
            fallback=fallback or (),
            max_attempts=max_attempts,
            deadline_seconds=deadline,
            budgets=budgets,
            client_limits=None
            if rpm is None and tpm is None
            else ClientLimits(requests_per_minute=rpm, tokens_per_minute=tpm),
            allow_providers=base.allow_providers,
            deny_providers=base.deny_providers,
            allow_keys=base.allow_keys,
            deny_keys=base.deny_keys,
            require_tags=base.require_tags,
            deny_tags=base.deny_tags,
            provider_filters={
                p: merge_filters(r.filter for r in rules) for p, rules in provider_rules.items()
            },
            key_filters={
                k: merge_filters(r.filter for r in rules) for k, rules in key_rules.items()
            },
            rules=(
                *base_rules,
                *(r for rs in provider_rules.values() for r in rs),
                *(r for rs in key_rules.values() for r in rs),
            ),
            applied=tuple(p.name for p in matching),
            sources=trail.sources,
            notes=trail.notes,
        )

    @staticmethod
    def _budgets(deciding: Sequence[Policy], trail: _Trail) -> tuple[str, ...]:
        """Every budget in scope applies, so budgets union (most authoritative policy first)."""
        budgets: dict[str, str] = {}
        contributors = []
        for p in deciding:
            if p.budgets:
                contributors.append(p)
                for budget in p.budgets:
                    budgets.setdefault(budget, p.name)
        for budget, name in budgets.items():
            trail.sources[f"budgets.{budget}"] = name
        if len(contributors) > 1:
            trail.notes.append(
                f"budgets={_fmt(tuple(budgets))}: union of "
                + " and ".join(
                    f"{_fmt(tuple(p.budgets or ()))} from {p.label}" for p in contributors
                )
            )
        return tuple(budgets)

    @staticmethod
    def _rules(
        matching: Sequence[Policy],
    ) -> tuple[list[FilterRule], dict[str, list[FilterRule]], dict[str, list[FilterRule]]]:
        """Each matching policy's key filter, grouped by what it applies to (sorted groups)."""
        base: list[FilterRule] = []
        by_provider: dict[str, list[FilterRule]] = {}
        by_key: dict[str, list[FilterRule]] = {}
        for p in matching:
            key_filter = p.key_filter()
            if key_filter is None:
                continue
            kind, value = p.scope.kind, p.scope.value
            if kind == "provider" and value is not None:
                rule = FilterRule(p.name, kind, key_filter, provider=value)
                by_provider.setdefault(value, []).append(rule)
            elif kind == "key" and value is not None:
                by_key.setdefault(value, []).append(FilterRule(p.name, kind, key_filter, key=value))
            else:
                base.append(FilterRule(p.name, kind, key_filter))
        return base, dict(sorted(by_provider.items())), dict(sorted(by_key.items()))

    # ---- dry run -----------------------------------------------------------------------------

    def dry_run(
        self,
        candidate: Policy | Sequence[Policy],
        *,
        requests: Sequence[tuple[str, str | None]] = (),
        keys: Sequence[APIKey] = (),
        providers_for_model: Callable[[str], Collection[str]] | None = None,
    ) -> DryRunReport:
        """What upserting ``candidate`` would change, leaving this engine untouched.

        Without ``requests``, samples every model and client the policies name (plus
        ``ANY_MODEL`` and no client). Without ``providers_for_model``, a model's providers are
        those of the given keys that serve it.
        """
        candidates = [candidate] if isinstance(candidate, Policy) else list(candidate)
        names = [p.name for p in candidates]
        dupes = repeated(names)
        if dupes:
            raise PolicyValidationError(
                [
                    PolicyProblem(
                        source="<dry run>", path="name", message=f"duplicate candidate {n!r}"
                    )
                    for n in dupes
                ]
            )
        after = PolicyEngine(self._policies.values())
        for p in candidates:
            after.upsert(p)
        samples = list(requests) or _default_samples(self, after)
        impacts = [
            _compare(self, after, model, client_id, keys, providers_for_model)
            for model, client_id in samples
        ]
        replaces = [n for n in names if n in self._policies]
        return _report(candidates, replaces, impacts)

    def list(self) -> builtins.list[Policy]:
        """Every policy (enabled or not), by name."""
        return [self._policies[name] for name in sorted(self._policies)]


def _default_samples(
    before: PolicyEngine, after: PolicyEngine
) -> builtins.list[tuple[str, str | None]]:
    models = [*sorted(before._models | after._models), ANY_MODEL]
    clients: builtins.list[str | None] = [None, *sorted(before._clients | after._clients)]
    return [(m, c) for m in models for c in clients]


def _providers(
    model: str, keys: Sequence[APIKey], lookup: Callable[[str], Collection[str]] | None
) -> frozenset[str]:
    if lookup is not None:
        return frozenset(lookup(model))
    return frozenset(k.provider_id for k in keys if model == ANY_MODEL or k.serves_model(model))


def _compare(
    before: PolicyEngine,
    after: PolicyEngine,
    model: str,
    client_id: str | None,
    keys: Sequence[APIKey],
    lookup: Callable[[str], Collection[str]] | None,
) -> RequestImpact:
    providers = _providers(model, keys, lookup)
    old = before.resolve(model=model, client_id=client_id, providers=providers)
    new = after.resolve(model=model, client_id=client_id, providers=providers)
    old_settings, new_settings = old.settings(), new.settings()
    changes = [
        SettingChange(setting=name, before=old_settings[name], after=new_settings[name])
        for name in old_settings
        if old_settings[name] != new_settings[name]
    ]
    excluded, allowed = [], []
    for key in keys:
        if providers and key.provider_id not in providers:
            continue
        if model != ANY_MODEL and not key.serves_model(model):
            continue
        was, now = old.allows(key), new.allows(key)
        if was and not now:
            excluded.append(
                KeyImpact(key_id=key.id, provider_id=key.provider_id, reason=new.why_excluded(key))
            )
        elif now and not was:
            allowed.append(
                KeyImpact(key_id=key.id, provider_id=key.provider_id, reason=old.why_excluded(key))
            )
    return RequestImpact(
        model=model,
        client_id=client_id,
        providers=sorted(providers),
        affected=bool(changes or excluded or allowed),
        changes=changes,
        newly_excluded=excluded,
        newly_allowed=allowed,
        notes=[note for note in new.notes if note not in old.notes],
    )


def _describe(impact: RequestImpact) -> str:
    who = f"client {impact.client_id}" if impact.client_id is not None else "no client"
    model = "any other model" if impact.model == ANY_MODEL else impact.model
    parts = [f"{c.setting} {_json_text(c.before)} -> {_json_text(c.after)}" for c in impact.changes]
    if impact.newly_excluded:
        parts.append(
            "newly excluded: "
            + ", ".join(
                f"{k.key_id} ({k.reason})" if k.reason else k.key_id for k in impact.newly_excluded
            )
        )
    if impact.newly_allowed:
        parts.append("newly allowed: " + ", ".join(k.key_id for k in impact.newly_allowed))
    return f"{model} / {who}: " + "; ".join(parts)


def _json_text(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, builtins.list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None) + "}"
    return str(value)


def _report(
    candidates: Sequence[Policy], replaces: Sequence[str], impacts: Sequence[RequestImpact]
) -> DryRunReport:
    affected = [i for i in impacts if i.affected]
    keys = sorted({k.key_id for i in affected for k in (*i.newly_excluded, *i.newly_allowed)})
    summary = [
        f"{p.label}: " + ("replaces the current version" if p.name in replaces else "new policy")
        for p in candidates
    ]
    if affected:
        summary.append(
            f"{len(affected)} of {len(impacts)} sample request(s) affected; "
            f"{len(keys)} key(s) affected" + (f": {', '.join(keys)}" if keys else "")
        )
        summary.extend(_describe(i) for i in affected)
    else:
        summary.append(f"no change for any of the {len(impacts)} sample request(s)")
    # New conflicts explain the changes, or why a policy changes nothing (say, a provider
    # policy whose objective does not apply because several providers serve the model).
    summary.extend(dict.fromkeys(f"note: {n}" for i in impacts for n in i.notes))
    return DryRunReport(
        candidates=[p.name for p in candidates],
        replaces=list(replaces),
        requests_checked=len(impacts),
        requests_affected=len(affected),
        keys_affected=keys,
        requests=list(impacts),
        summary=summary,
    )


__all__ = ["ANY_MODEL", "MAX_CACHE_ENTRIES", "PolicyEngine"]
