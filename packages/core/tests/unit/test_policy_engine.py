"""Unit tests for policy models, precedence resolution, key filters, caching and dry runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from apikeyrouter.domain.components.policy_engine import ANY_MODEL, PolicyEngine
from apikeyrouter.domain.models.api_key import APIKey
from apikeyrouter.domain.models.policy import (
    ClientLimits,
    FallbackStep,
    Policy,
    PolicyDocument,
    PolicyScope,
    PolicyValidationError,
    ResolvedPolicy,
)
from apikeyrouter.domain.models.request_context import RoutingObjective
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

MODEL = "gpt-4o"
OPENAI = frozenset({"openai"})
BOTH = frozenset({"openai", "anthropic"})


def pol(name: str, scope: str, **fields: Any) -> Policy:
    return Policy.model_validate({"name": name, "scope": scope, **fields})


def key(key_id: str, provider: str = "openai", tags: tuple[str, ...] = ()) -> APIKey:
    return APIKey(
        id=key_id, provider_id=provider, encrypted_material="v1:opaque", tags=frozenset(tags)
    )


def resolve(engine: PolicyEngine, **kwargs: Any) -> ResolvedPolicy:
    kwargs.setdefault("model", MODEL)
    return engine.resolve(**kwargs)


# ---- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("default", "default", None),
        ("global", "global", None),
        ("provider:openai", "provider", "openai"),
        ("key:key_ab12", "key", "key_ab12"),
        ("client:team-a", "client", "team-a"),
        ("client:ns:team", "client", "ns:team"),
    ],
)
def test_scope_compact_form(text: str, kind: str, value: str | None) -> None:
    scope = PolicyScope.model_validate(text)
    assert (scope.kind, scope.value) == (kind, value)
    assert str(scope) == text
    assert PolicyScope.model_validate(scope.model_dump()) == scope


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("everyone", "unknown scope 'everyone'"),
        ("provider", "scope 'provider' needs a value"),
        ("provider:", "scope 'provider' needs a value"),
        ("global:x", "takes no value"),
        ({"kind": "client"}, "a client scope needs a value"),
        ({"kind": "global", "value": "x"}, "takes no value"),
        ({"kind": "tenant", "value": "x"}, "Input should be"),
        ({"kind": "global", "extra": 1}, "Extra inputs"),
    ],
)
def test_scope_rejects(data: Any, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        PolicyScope.model_validate(data)


@pytest.mark.parametrize("field", ["objective", "fallback", "retry", "budgets", "client_limits"])
def test_key_scope_rejects_request_level_fields(field: str) -> None:
    values: dict[str, Any] = {
        "objective": "cost",
        "fallback": ["gpt-4o-mini"],
        "retry": {"max_attempts": 2},
        "budgets": ["b"],
        "client_limits": {"requests_per_minute": 5},
    }
    with pytest.raises(ValidationError) as info:
        pol("k", "key:key_1", **{field: values[field]})
    (error,) = info.value.errors()
    assert error["loc"] == (field,)
    assert f"{field} is a request-level setting" in error["msg"]
    assert "before any key is chosen" in error["msg"]


@pytest.mark.parametrize("scope", ["provider:openai", "key:key_1"])
@pytest.mark.parametrize("field", ["allow_providers", "deny_providers"])
def test_narrow_scopes_reject_provider_filters(scope: str, field: str) -> None:
    with pytest.raises(ValidationError, match=f"{field} has no meaning on a"):
        pol("p", scope, **{field: ["openai"]})


def test_provider_scope_accepts_request_level_and_key_filters() -> None:
    policy = pol("p", "provider:openai", objective="cost", deny_tags=["x"], allow_keys=["k"])
    assert policy.objective is RoutingObjective.COST


def test_key_scope_may_only_name_its_own_key() -> None:
    assert pol("k", "key:key_1", deny_keys=["key_1"], require_tags=["t"]).deny_keys == ["key_1"]
    with pytest.raises(ValidationError, match="only applies to key 'key_1'"):
        pol("k", "key:key_1", deny_keys=["key_2"])


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"allow_providers": ["a", "b"], "deny_providers": ["b"]}, "b is in both allow_providers"),
        ({"allow_keys": ["k"], "deny_keys": ["k"]}, "k is in both allow_keys"),
        ({"require_tags": ["t"], "deny_tags": ["t"]}, "t is in both require_tags"),
    ],
)
def test_contradictory_filters_rejected(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        pol("p", "global", **fields)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"name": "has space"}, "name"),
        ({"models": []}, "models"),
        ({"retry": {"max_attempts": 0}}, "retry"),
        ({"retry": {"deadline_seconds": 0}}, "retry"),
        ({"client_limits": {"requests_per_minute": -1}}, "client_limits"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_policy_field_validation(fields: dict[str, Any], loc: str) -> None:
    data = {"name": "p", "scope": "global", **fields}
    with pytest.raises(ValidationError) as info:
        Policy.model_validate(data)
    assert info.value.errors()[0]["loc"][0] == loc


def test_fallback_accepts_bare_model_name() -> None:
    policy = pol("p", "global", fallback=["gpt-4o-mini", {"model": "claude", "provider": "x"}])
    assert policy.fallback == [
        FallbackStep(model="gpt-4o-mini"),
        FallbackStep(model="claude", provider="x"),
    ]
    assert [str(s) for s in policy.fallback] == ["gpt-4o-mini", "claude@x"]


def test_policy_round_trips_through_json() -> None:
    policy = pol("p", "client:team-a", objective="cost", fallback=["m"], retry={"max_attempts": 2})
    dumped = policy.model_dump(mode="json", exclude_defaults=True)
    assert dumped["scope"] == "client:team-a"
    assert Policy.model_validate(json.loads(json.dumps(dumped))) == policy


def test_document_requires_unique_names() -> None:
    with pytest.raises(ValidationError, match=r"duplicate policy name 'a' at policies\[0\]"):
        PolicyDocument.model_validate(
            {"policies": [{"name": "a", "scope": "global"}, {"name": "a", "scope": "default"}]}
        )


# ---- precedence ------------------------------------------------------------------------------

LEVEL_SCOPES = {
    "default": "default",
    "global": "global",
    "provider": "provider:openai",
    "client": "client:team-a",
}
LEVEL_PAIRS = [
    ("default", "global"),
    ("default", "provider"),
    ("default", "client"),
    ("global", "provider"),
    ("global", "client"),
    ("provider", "client"),
]


@pytest.mark.parametrize(("lower", "higher"), LEVEL_PAIRS)
@pytest.mark.parametrize("insert_higher_first", [False, True])
def test_higher_level_wins(lower: str, higher: str, insert_higher_first: bool) -> None:
    # Names and priorities point the other way, so only the level can decide.
    low = pol("a-low", LEVEL_SCOPES[lower], objective="latency", priority=100)
    high = pol("z-high", LEVEL_SCOPES[higher], objective="cost", priority=-100)
    engine = PolicyEngine([high, low] if insert_higher_first else [low, high])
    resolved = resolve(engine, client_id="team-a", providers=OPENAI)
    assert resolved.objective is RoutingObjective.COST
    assert resolved.sources["objective"] == "z-high"
    assert resolved.notes == [
        f"objective=cost from 'z-high' ({higher}) overrides latency from 'a-low' ({lower})"
    ]


@pytest.mark.parametrize("lower", ["default", "global", "provider", "client"])
def test_key_level_never_sets_request_settings_but_filters(lower: str) -> None:
    engine = PolicyEngine(
        [
            pol("other", LEVEL_SCOPES[lower], objective="latency"),
            pol("k", "key:k1", deny_keys=["k1"]),
        ]
    )
    resolved = resolve(engine, client_id="team-a", providers=OPENAI)
    assert resolved.objective is RoutingObjective.LATENCY
    assert not resolved.allows(key("k1"))
    assert resolved.allows(key("k2"))


def test_note_text_for_client_over_global() -> None:
    engine = PolicyEngine(
        [
            pol("base", "global", objective="latency"),
            pol("team-a", "client:team-a", objective="cost"),
        ]
    )
    resolved = resolve(engine, client_id="team-a")
    assert resolved.notes == [
        "objective=cost from 'team-a' (client) overrides latency from 'base' (global)"
    ]
    assert resolved.applied == ("team-a", "base")
    other = resolve(engine, client_id="team-b")
    assert other.objective is RoutingObjective.LATENCY
    assert other.notes == []


def test_priority_then_name_break_ties_within_a_level() -> None:
    engine = PolicyEngine(
        [
            pol("a", "global", objective="latency", priority=1),
            pol("b", "global", objective="cost", priority=5),
            pol("c", "global", objective="quota", priority=5),
        ]
    )
    resolved = resolve(engine)
    assert resolved.objective is RoutingObjective.COST
    assert resolved.notes == [
        "objective=cost from 'b' (global) overrides "
        "quota from 'c' (global) [same level and priority, 'b' sorts first], "
        "latency from 'a' (global) [same level, priority 5 > 1]"
    ]


def test_equal_values_are_not_conflicts() -> None:
    engine = PolicyEngine(
        [pol("a", "global", objective="cost"), pol("b", "client:x", objective="cost")]
    )
    resolved = resolve(engine, client_id="x")
    assert resolved.sources["objective"] == "b"
    assert resolved.notes == []


def test_retry_and_client_limits_merge_per_field() -> None:
    engine = PolicyEngine(
        [
            pol(
                "base",
                "global",
                retry={"max_attempts": 3, "deadline_seconds": 30},
                client_limits={"requests_per_minute": 60, "tokens_per_minute": 1000},
            ),
            pol(
                "team",
                "client:t",
                retry={"deadline_seconds": 10},
                client_limits={"tokens_per_minute": 5000},
            ),
        ]
    )
    resolved = resolve(engine, client_id="t")
    assert (resolved.max_attempts, resolved.deadline_seconds) == (3, 10)
    assert resolved.client_limits == ClientLimits(requests_per_minute=60, tokens_per_minute=5000)
    assert resolved.sources["max_attempts"] == "base"
    assert resolved.sources["deadline_seconds"] == "team"
    assert resolved.sources["client_limits.tokens_per_minute"] == "team"
    assert "deadline_seconds=10 from 'team' (client) overrides 30 from 'base' (global)" in (
        resolved.notes
    )


def test_fallback_overrides_whole_chain_even_with_empty_list() -> None:
    engine = PolicyEngine(
        [
            pol("base", "global", fallback=["gpt-4o-mini", {"model": "claude", "provider": "ant"}]),
            pol("team", "client:t", fallback=[]),
        ]
    )
    assert resolve(engine).fallback == (
        FallbackStep(model="gpt-4o-mini"),
        FallbackStep(model="claude", provider="ant"),
    )
    resolved = resolve(engine, client_id="t")
    assert resolved.fallback == ()
    assert resolved.notes == [
        "fallback=[] from 'team' (client) overrides [gpt-4o-mini, claude@ant] from 'base' (global)"
    ]


def test_budgets_union_without_duplicates() -> None:
    engine = PolicyEngine(
        [
            pol("base", "global", budgets=["org-monthly", "shared"]),
            pol("team", "client:t", budgets=["team-daily", "shared"]),
        ]
    )
    resolved = resolve(engine, client_id="t")
    assert resolved.budgets == ("team-daily", "shared", "org-monthly")
    assert resolved.sources["budgets.shared"] == "team"
    assert resolved.sources["budgets.org-monthly"] == "base"
    assert resolve(engine).budgets == ("org-monthly", "shared")


def test_provider_request_settings_need_a_single_provider() -> None:
    engine = PolicyEngine(
        [pol("base", "global", objective="latency"), pol("oa", "provider:openai", objective="cost")]
    )
    assert resolve(engine, providers=OPENAI).objective is RoutingObjective.COST
    several = resolve(engine, providers=BOTH)
    assert several.objective is RoutingObjective.LATENCY
    assert several.notes == [
        "request-level settings of 'oa' (provider) not applied: 2 providers can serve this "
        "request ({anthropic, openai})"
    ]
    unknown = resolve(engine)
    assert unknown.objective is RoutingObjective.LATENCY
    assert "the providers for this request are unknown" in unknown.notes[0]
    elsewhere = resolve(engine, providers=frozenset({"anthropic"}))
    assert elsewhere.objective is RoutingObjective.LATENCY
    assert elsewhere.notes == []


def test_providers_accepts_any_collection() -> None:
    engine = PolicyEngine([pol("oa", "provider:openai", objective="cost")])
    assert engine.resolve(model=MODEL, providers=["openai"]).objective is RoutingObjective.COST


# ---- key filters -----------------------------------------------------------------------------


def test_allow_lists_intersect_and_deny_lists_union() -> None:
    engine = PolicyEngine(
        [
            pol("base", "global", allow_providers=["openai", "anthropic"], deny_tags=["preview"]),
            pol("team", "client:t", allow_providers=["openai", "gemini"], deny_tags=["slow"]),
        ]
    )
    resolved = resolve(engine, client_id="t")
    assert resolved.allow_providers == frozenset({"openai"})
    assert resolved.deny_tags == frozenset({"preview", "slow"})
    assert resolved.allows(key("k1"))
    assert not resolved.allows(key("k2", "anthropic"))
    assert not resolved.allows(key("k3", "gemini"))
    assert not resolved.allows(key("k4", tags=("slow",)))
    assert resolved.why_excluded(key("k2", "anthropic")) == (
        "provider anthropic not allowed by 'team' (client)"
    )
    assert resolved.why_excluded(key("k3", "gemini")) == (
        "provider gemini not allowed by 'base' (global)"
    )
    assert resolved.why_excluded(key("k4", tags=("slow",))) == (
        "tag(s) slow denied by 'team' (client)"
    )
    assert resolved.why_excluded(key("k1")) is None
    assert resolved.notes == [
        "allow_providers={openai}: intersection of {gemini, openai} from 'team' (client) and "
        "{anthropic, openai} from 'base' (global)"
    ]
    assert resolved.sources["deny_tags"] == "team, base"
    assert resolve(engine).allows(key("k2", "anthropic"))


def test_allow_and_deny_conflict_is_explained() -> None:
    engine = PolicyEngine(
        [
            pol("base", "global", allow_keys=["k1", "k2"]),
            pol("team", "client:t", deny_keys=["k1"], require_tags=["prod"]),
            pol("lab", "global", deny_tags=["prod"], models=["exp"]),
        ]
    )
    resolved = resolve(engine, client_id="t")
    assert "key k1 is allowed by 'base' (global) but denied by 'team' (client): deny wins" in (
        resolved.notes
    )
    assert not resolved.allows(key("k1", tags=("prod",)))
    assert resolved.allows(key("k2", tags=("prod",)))
    exp = resolve(engine, model="exp", client_id="t")
    assert (
        "tag prod is required by 'team' (client) but denied by 'lab' (global): no key can pass"
        in exp.notes
    )
    assert not exp.allows(key("k2", tags=("prod",)))


def test_provider_scoped_filters_only_touch_that_provider() -> None:
    engine = PolicyEngine([pol("oa", "provider:openai", require_tags=["prod"], deny_keys=["k9"])])
    resolved = resolve(engine, providers=BOTH)
    assert not resolved.allows(key("k1", "openai"))
    assert resolved.allows(key("k2", "openai", ("prod",)))
    assert resolved.allows(key("k3", "anthropic"))
    assert resolved.allows(key("k9", "anthropic"))
    assert not resolved.allows(key("k9", "openai", ("prod",)))
    assert resolved.why_excluded(key("k1")) == "missing tag(s) prod required by 'oa' (provider)"
    assert resolved.provider_filters["openai"].require_tags == frozenset({"prod"})
    assert resolved.sources["provider:openai.require_tags"] == "oa"


def test_provider_overlay_combines_with_global_provider_rules() -> None:
    engine = PolicyEngine(
        [
            pol("base", "global", deny_providers=["gemini"], deny_tags=["old"]),
            pol("oa", "provider:openai", allow_keys=["k1", "k2"]),
            pol("g", "provider:gemini", deny_tags=["x"]),
        ]
    )
    resolved = resolve(engine)
    assert resolved.allows(key("k1"))
    assert not resolved.allows(key("k1", tags=("old",)))
    assert not resolved.allows(key("k3"))
    assert not resolved.allows(key("k1", "gemini"))
    assert resolved.allows(key("k3", "anthropic"))
    assert resolved.why_excluded(key("k1", "gemini")) == "provider gemini denied by 'base' (global)"


def test_key_scoped_filter_only_touches_that_key() -> None:
    engine = PolicyEngine(
        [
            pol("k1-no-4o", "key:k1", models=[MODEL], deny_keys=["k1"]),
            pol("k2-tagged", "key:k2", require_tags=["eu"]),
        ]
    )
    resolved = resolve(engine)
    assert not resolved.allows(key("k1"))
    assert resolved.why_excluded(key("k1")) == "key k1 denied by 'k1-no-4o' (key)"
    assert not resolved.allows(key("k2"))
    assert resolved.allows(key("k2", tags=("eu",)))
    assert resolved.allows(key("k3"))
    assert resolve(engine, model="gpt-4o-mini").allows(key("k1"))


def test_models_condition_and_disabled_policies() -> None:
    engine = PolicyEngine(
        [
            pol("base", "global", objective="latency"),
            pol("big", "global", objective="cost", priority=1, models=["gpt-4o", "o1"]),
            pol("off", "global", objective="quota", priority=9, enabled=False),
        ]
    )
    assert resolve(engine, model="gpt-4o").objective is RoutingObjective.COST
    assert resolve(engine, model="o1").objective is RoutingObjective.COST
    assert resolve(engine, model="gpt-4o-mini").objective is RoutingObjective.LATENCY
    assert "off" not in resolve(engine).applied
    assert engine.get("off") is not None


def test_no_policies_allows_everything() -> None:
    resolved = PolicyEngine().resolve(model=MODEL)
    assert resolved.allows(key("k1"))
    assert resolved.objective is None
    assert resolved.why_excluded(key("k1")) is None
    json.dumps(resolved.to_dict())


def test_empty_allow_list_excludes_everything_and_says_so() -> None:
    resolved = resolve(PolicyEngine([pol("lock", "client:x", allow_providers=[])]), client_id="x")
    assert not resolved.allows(key("k1"))
    assert resolved.notes == ["allow_providers is empty in 'lock' (client): no provider is allowed"]


# ---- engine management and cache -------------------------------------------------------------


def test_cache_hit_returns_same_object_and_ignores_unknown_facts() -> None:
    engine = PolicyEngine([pol("t", "client:t", objective="cost", models=[MODEL])])
    first = resolve(engine, client_id="t", providers=OPENAI)
    assert resolve(engine, client_id="t", providers=OPENAI) is first
    # Models and clients no policy mentions resolve alike, so they share one cache entry.
    assert engine.resolve(model="m1", client_id="u1") is engine.resolve(model="m2", client_id="u2")


def test_cache_invalidated_on_every_change() -> None:
    engine = PolicyEngine([pol("base", "global", objective="latency")])
    revision = engine.revision
    assert resolve(engine).objective is RoutingObjective.LATENCY
    replaced = engine.upsert(pol("base", "global", objective="cost"))
    assert replaced is not None
    assert replaced.objective is RoutingObjective.LATENCY
    assert resolve(engine).objective is RoutingObjective.COST
    assert engine.upsert(pol("more", "global", objective="quota", priority=1)) is None
    assert resolve(engine).objective is RoutingObjective.QUOTA
    assert engine.remove("more") is True
    assert engine.remove("more") is False
    assert resolve(engine).objective is RoutingObjective.COST
    engine.replace_all([])
    assert resolve(engine).objective is None
    assert engine.revision == revision + 4


def test_list_get_and_duplicate_names() -> None:
    engine = PolicyEngine([pol("b", "global"), pol("a", "default")])
    assert [p.name for p in engine.list()] == ["a", "b"]
    assert engine.get("missing") is None
    with pytest.raises(PolicyValidationError, match="duplicate policy name 'a'"):
        engine.replace_all([pol("a", "global"), pol("a", "default")])
    assert [p.name for p in engine.list()] == ["a", "b"]


# ---- dry run ---------------------------------------------------------------------------------

KEYS = [
    key("k-prod", tags=("prod",)),
    key("k-preview", tags=("preview",)),
    key("k-both", tags=("prod", "preview")),
    key("k-ant", "anthropic", ("preview",)),
]


def test_dry_run_tag_denial_reports_affected_keys() -> None:
    engine = PolicyEngine([pol("base", "global", objective="latency")])
    report = engine.dry_run(
        pol("no-preview", "global", deny_tags=["preview"]),
        requests=[(MODEL, None), (MODEL, "team-a")],
        keys=KEYS,
    )
    assert report.candidates == ["no-preview"]
    assert report.replaces == []
    assert report.requests_checked == 2
    assert report.requests_affected == 2
    assert report.keys_affected == ["k-ant", "k-both", "k-preview"]
    impact = report.requests[0]
    assert impact.providers == ["anthropic", "openai"]
    assert impact.changes == []
    assert [k.key_id for k in impact.newly_excluded] == ["k-preview", "k-both", "k-ant"]
    assert impact.newly_excluded[0].reason == "tag(s) preview denied by 'no-preview' (global)"
    assert "2 of 2 sample request(s) affected; 3 key(s) affected" in report.summary[1]
    assert engine.get("no-preview") is None  # the engine itself is untouched
    json.loads(report.model_dump_json())


def test_dry_run_client_objective_reports_affected_requests() -> None:
    engine = PolicyEngine([pol("base", "global", objective="latency")])
    report = engine.dry_run(
        pol("team-a", "client:team-a", objective="cost"),
        requests=[(MODEL, None), (MODEL, "team-a"), ("o1", "team-b"), ("o1", "team-a")],
        keys=KEYS,
    )
    affected = [(r.model, r.client_id) for r in report.requests if r.affected]
    assert affected == [(MODEL, "team-a"), ("o1", "team-a")]
    assert report.keys_affected == []
    change = report.requests[1].changes[0]
    assert (change.setting, change.before, change.after) == ("objective", "latency", "cost")
    assert "gpt-4o / client team-a: objective latency -> cost" in report.summary
    assert report.summary[-1] == (
        "note: objective=cost from 'team-a' (client) overrides latency from 'base' (global)"
    )


def test_dry_run_explains_a_provider_policy_that_cannot_apply() -> None:
    report = PolicyEngine().dry_run(pol("oa", "provider:openai", objective="cost"), keys=KEYS)
    assert report.requests_affected == 0
    assert report.summary[-1] == (
        "note: request-level settings of 'oa' (provider) not applied: 2 providers can serve "
        "this request ({anthropic, openai})"
    )
    single = PolicyEngine().dry_run(
        pol("oa", "provider:openai", objective="cost"),
        keys=KEYS,
        providers_for_model=lambda model: {"openai"},
    )
    assert single.requests_affected == 1


def test_dry_run_no_op_policy_affects_nothing() -> None:
    engine = PolicyEngine([pol("base", "global", objective="latency", deny_tags=["preview"])])
    report = engine.dry_run(
        [pol("same", "global", objective="latency"), pol("x", "client:x", deny_tags=["preview"])],
        keys=KEYS,
    )
    assert report.requests_affected == 0
    assert report.keys_affected == []
    assert report.summary[2].startswith("no change for any of the")
    assert len(report.summary) == 3
    # Without explicit requests it samples every named client and "any model".
    assert {(r.model, r.client_id) for r in report.requests} == {
        (ANY_MODEL, None),
        (ANY_MODEL, "x"),
    }


def test_dry_run_replacement_can_newly_allow_keys() -> None:
    engine = PolicyEngine([pol("gate", "global", require_tags=["prod"])])
    report = engine.dry_run(
        pol("gate", "global", require_tags=["prod"], models=["o1"]),
        requests=[(MODEL, None)],
        keys=KEYS,
        providers_for_model=lambda model: ["openai"],
    )
    assert report.replaces == ["gate"]
    assert "replaces the current version" in report.summary[0]
    impact = report.requests[0]
    assert [k.key_id for k in impact.newly_allowed] == ["k-preview"]
    assert impact.newly_allowed[0].reason == "missing tag(s) prod required by 'gate' (global)"
    assert impact.providers == ["openai"]


def test_dry_run_rejects_duplicate_candidates() -> None:
    with pytest.raises(PolicyValidationError, match="duplicate candidate 'a'"):
        PolicyEngine().dry_run([pol("a", "global"), pol("a", "default")])


# ---- properties ------------------------------------------------------------------------------

PROVIDERS = ["openai", "anthropic", "gemini"]
KEY_IDS = ["k1", "k2", "k3"]
TAGS = ["prod", "preview", "eu"]
CLIENTS = ["c1", "c2"]
MODELS = ["m1", "m2"]


@st.composite
def policies(draw: st.DrawFn) -> list[Policy]:
    count = draw(st.integers(min_value=0, max_value=7))
    names = draw(
        st.lists(st.sampled_from("abcdefghij"), min_size=count, max_size=count, unique=True)
    )
    result = []
    for name in names:
        kind = draw(st.sampled_from(["default", "global", "provider", "key", "client"]))
        value = {
            "provider": draw(st.sampled_from(PROVIDERS)),
            "key": draw(st.sampled_from(KEY_IDS)),
            "client": draw(st.sampled_from(CLIENTS)),
        }.get(kind)
        data: dict[str, Any] = {
            "name": name,
            "scope": kind if value is None else f"{kind}:{value}",
            "priority": draw(st.integers(min_value=0, max_value=2)),
            "enabled": draw(st.booleans()),
        }
        subset = st.lists(st.sampled_from(TAGS), unique=True, max_size=2)
        if draw(st.booleans()):
            data["models"] = draw(st.lists(st.sampled_from(MODELS), min_size=1, unique=True))
        if kind != "key":
            data["objective"] = draw(st.none() | st.sampled_from(list(RoutingObjective)))
            data["budgets"] = draw(st.none() | st.lists(st.sampled_from("xyz"), unique=True))
            data["retry"] = draw(
                st.none() | st.builds(dict, max_attempts=st.integers(min_value=1, max_value=3))
            )
        if kind in ("default", "global", "client") and draw(st.booleans()):
            data["allow_providers"] = draw(st.lists(st.sampled_from(PROVIDERS), unique=True))
        keys = [value] if kind == "key" else KEY_IDS
        if draw(st.booleans()):
            data["deny_keys"] = draw(st.lists(st.sampled_from(keys), unique=True))
        required = draw(subset)
        data["require_tags"] = required
        data["deny_tags"] = [t for t in draw(subset) if t not in required]
        result.append(Policy.model_validate(data))
    return result


ALL_KEYS = [
    key(k, p, tags)
    for k in KEY_IDS
    for p in PROVIDERS
    for tags in [(), ("prod",), ("eu", "preview")]
]


@settings(max_examples=60, deadline=None)
@given(policies(), st.randoms(use_true_random=False))
def test_resolution_does_not_depend_on_insertion_order(drawn: list[Policy], rnd: Any) -> None:
    shuffled = list(drawn)
    rnd.shuffle(shuffled)
    one = PolicyEngine(drawn)
    other = PolicyEngine()
    for policy in shuffled:
        other.upsert(policy)
    for model in [*MODELS, "m-other"]:
        for client in [None, *CLIENTS]:
            for providers in [frozenset(), frozenset({"openai"}), frozenset(PROVIDERS)]:
                a = one.resolve(model=model, client_id=client, providers=providers)
                b = other.resolve(model=model, client_id=client, providers=providers)
                assert a == b
                assert a.notes == b.notes
                for k in ALL_KEYS:
                    assert a.allows(k) == b.allows(k)
                    assert a.allows(k) == (a.why_excluded(k) is None)
