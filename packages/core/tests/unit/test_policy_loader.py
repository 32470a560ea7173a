"""Unit tests for parsing policy documents (YAML and JSON) and for their error messages."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest
from apikeyrouter.domain.components.policy_loader import (
    parse_policies,
    validate_policies,
    validate_policy,
)
from apikeyrouter.domain.models.policy import (
    ClientLimits,
    FallbackStep,
    PolicyScope,
    PolicyValidationError,
    RetrySettings,
)
from apikeyrouter.domain.models.request_context import RoutingObjective
from apikeyrouter.utils.exceptions import InvalidRequestError

FULL_YAML = dedent(
    """\
    # every field once
    policies:
      - name: base
        scope: global
        description: Organisation defaults
        objective: quota
        deny_tags: [preview]
        retry:
          max_attempts: 3
          deadline_seconds: 30
        budgets: [org-monthly]
      - name: team-a
        scope: client:team-a
        priority: 10
        models: [gpt-4o, gpt-4o-mini]
        objective: cost
        allow_providers: [openai, anthropic]
        fallback:
          - gpt-4o-mini
          - model: claude-3-5-haiku-latest
            provider: anthropic
        client_limits: {requests_per_minute: 120, tokens_per_minute: 200000}
      - name: openai-prod-only
        scope: {kind: provider, value: openai}
        require_tags: [prod]
      - name: retire-key
        scope: key:key_ab12
        enabled: false
        deny_keys: [key_ab12]
    """
)


def problems_of(text: str, **kwargs: str) -> list[str]:
    with pytest.raises(PolicyValidationError) as info:
        parse_policies(text, **kwargs)  # type: ignore[arg-type]
    lines = info.value.message.splitlines()
    assert lines == [str(p) for p in info.value.problems]
    return lines


def test_full_yaml_document() -> None:
    policies = parse_policies(FULL_YAML, source="policies.yaml")
    assert [p.name for p in policies] == ["base", "team-a", "openai-prod-only", "retire-key"]
    base, team, provider, retired = policies
    assert base.retry == RetrySettings(max_attempts=3, deadline_seconds=30)
    assert base.objective is RoutingObjective.QUOTA
    assert team.scope == PolicyScope(kind="client", value="team-a")
    assert team.fallback == [
        FallbackStep(model="gpt-4o-mini"),
        FallbackStep(model="claude-3-5-haiku-latest", provider="anthropic"),
    ]
    assert team.client_limits == ClientLimits(requests_per_minute=120, tokens_per_minute=200000)
    assert str(provider.scope) == "provider:openai"
    assert retired.enabled is False


def test_json_and_bare_list_and_round_trip() -> None:
    policies = parse_policies(FULL_YAML)
    dumped = [p.model_dump(mode="json", exclude_defaults=True) for p in policies]
    assert parse_policies(json.dumps({"policies": dumped}), format="json") == policies
    assert parse_policies(json.dumps(dumped, indent=2)) == policies  # auto-detected, bare list
    assert validate_policies({"policies": dumped}) == policies


@pytest.mark.parametrize("text", ["", "  \n# nothing yet\n", "policies:\n", '{"policies": []}'])
def test_empty_documents_mean_no_policies(text: str) -> None:
    assert parse_policies(text) == []


def test_several_errors_at_once_with_lines_and_fields() -> None:
    text = dedent(
        """\
        policies:
          - name: a
            scope: provdier:openai
            retri: 3
          - name: b
            scope: key:key_1
            objective: cost
            retry:
              max_attempts: zero
          - name: ok
            scope: global
            client_limits:
              requests_per_minute: -5
              token_per_minute: 10
          - name: a
            scope: global
        """
    )
    assert problems_of(text, source="ops/policies.yaml") == [
        "ops/policies.yaml:3: policies[0].scope: unknown scope 'provdier:openai': expected "
        "default, global, provider:<provider id>, key:<key id> or client:<client id>",
        "ops/policies.yaml:4: policies[0].retri: unknown field 'retri' (did you mean 'retry'?)",
        "ops/policies.yaml:7: policies[1].objective: objective is a request-level setting: it is "
        "decided before any key is chosen, so a key-scoped policy cannot set it (put it on a "
        "default, global, provider or client policy)",
        "ops/policies.yaml:9: policies[1].retry.max_attempts: Input should be a valid integer, "
        "unable to parse string as an integer (got 'zero')",
        "ops/policies.yaml:13: policies[2].client_limits.requests_per_minute: Input should be "
        "greater than 0 (got -5)",
        "ops/policies.yaml:14: policies[2].client_limits.token_per_minute: unknown field "
        "'token_per_minute' (did you mean 'tokens_per_minute'?)",
        "ops/policies.yaml:15: policies[3].name: duplicate policy name 'a' "
        "(first used at policies[0], line 2)",
    ]


def test_error_is_an_invalid_request_with_structured_problems() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_policies("- name: x\n  scope: global\n  priority: high\n", source="p.yaml")
    error = info.value
    assert isinstance(error, PolicyValidationError)
    assert error.status == 400
    assert error.param == "policies[0].priority"
    (problem,) = error.problems
    assert (problem.source, problem.line, problem.path) == ("p.yaml", 3, "policies[0].priority")
    assert "valid integer" in problem.message


def test_missing_fields_point_at_the_policy() -> None:
    assert problems_of("policies:\n  - description: no name\n    enabled: true\n") == [
        "<policies>:2: policies[0].name: required field is missing",
        "<policies>:2: policies[0].scope: required field is missing",
    ]


def test_wrong_types() -> None:
    text = dedent(
        """\
        - name: x
          scope: global
          allow_providers: openai
          enabled: sometimes
          fallback:
            - {model: 3}
        """
    )
    problems = problems_of(text, source="p.yaml")
    assert problems[0] == (
        "p.yaml:3: policies[0].allow_providers: Input should be a valid list (got 'openai')"
    )
    assert problems[1].startswith("p.yaml:4: policies[0].enabled: Input should be a valid boolean")
    assert problems[2] == (
        "p.yaml:6: policies[0].fallback[0].model: Input should be a valid string (got 3)"
    )


@pytest.mark.parametrize(
    ("scope", "fragment"),
    [
        ("everyone", "unknown scope 'everyone'"),
        ("client", "scope 'client' needs a value: write client:<client id>"),
        ("global:x", "scope 'global' applies to everything and takes no value"),
        ("{kind: key}", "a key scope needs a value"),
    ],
)
def test_bad_scope(scope: str, fragment: str) -> None:
    (problem,) = problems_of(f"policies:\n  - name: x\n    scope: {scope}\n", source="s.yml")
    assert problem.startswith("s.yml:3: policies[0].scope: ")
    assert fragment in problem


def test_unknown_fields_everywhere() -> None:
    text = dedent(
        """\
        version: 2
        policies:
          - name: x
            scope: {kind: global, valu: null}
            retry: {attempts: 2}
            objectiv: cost
        """
    )
    assert problems_of(text) == [
        "<policies>:1: version: unknown top-level field 'version': a policy document has only "
        "'policies'",
        "<policies>:4: policies[0].scope.valu: unknown field 'valu' (did you mean 'value'?)",
        "<policies>:5: policies[0].retry.attempts: unknown field 'attempts' "
        "(did you mean 'max_attempts'?)",
        "<policies>:6: policies[0].objectiv: unknown field 'objectiv' (did you mean 'objective'?)",
    ]


def test_unknown_field_without_close_match_lists_allowed() -> None:
    (problem,) = problems_of("- name: x\n  scope: global\n  retry: {zzz: 1}\n")
    assert "unknown field 'zzz' (allowed: deadline_seconds, max_attempts)" in problem


def test_duplicate_yaml_keys_are_reported() -> None:
    text = "- name: x\n  scope: global\n  objective: cost\n  objective: latency\n"
    assert problems_of(text, source="d.yaml") == [
        "d.yaml:4: policies[0].objective: duplicate key 'objective' (first on line 3); "
        "only one may be given"
    ]


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "policies:\n  - name: x\n    scope: global\n   objective: [cost\n"
    (problem,) = problems_of(text, source="s.yaml")
    assert problem.startswith("s.yaml:4:4: invalid YAML: ")


def test_unsafe_yaml_tags_are_rejected() -> None:
    (problem,) = problems_of("- !!python/object:os.system {}\n", source="t.yaml")
    assert problem.startswith("t.yaml:1:3: invalid YAML: could not determine a constructor")


def test_json_syntax_error_has_line_and_column() -> None:
    text = '{\n  "policies": [\n    {"name": "x" "scope": "global"}\n  ]\n}\n'
    assert problems_of(text, source="p.json", format="json") == [
        "p.json:3:18: invalid JSON: Expecting ',' delimiter"
    ]
    # Auto-detection reports the JSON error too when the text is not YAML either.
    assert problems_of(text, source="p.json")[0].startswith("p.json:3:18: invalid JSON")


def test_json_validation_errors_name_field_and_line() -> None:
    text = dedent(
        """\
        {"policies": [
          {"name": "x", "scope": "global"},
          {"name": "y",
           "scope": "key:k1",
           "fallback": ["gpt-4o-mini"]}
        ]}
        """
    )
    (problem,) = problems_of(text, source="p.json", format="json")
    assert problem.startswith("p.json:5: policies[1].fallback: fallback is a request-level setting")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "42",
            "<policies>:1: expected a mapping with a 'policies' list, or a list of policies; "
            "got int",
        ),
        ("policies: {name: x}", "<policies>:1: policies: 'policies' must be a list, got dict"),
        ("- just a string", "<policies>:1: policies[0]: Input should be a valid dictionary"),
    ],
)
def test_document_shape_errors(text: str, message: str) -> None:
    assert problems_of(text)[0].startswith(message)


def test_validate_policy_for_api_bodies() -> None:
    policy = validate_policy({"name": "x", "scope": "client:c", "objective": "cost"})
    assert policy.objective is RoutingObjective.COST
    with pytest.raises(PolicyValidationError) as info:
        validate_policy({"name": "x", "scope": "key:k", "budgets": ["b"]}, source="PUT /policies/x")
    assert info.value.message.startswith("PUT /policies/x: budgets: budgets is a request-level")


def test_control_characters_are_a_yaml_problem_not_a_crash() -> None:
    with pytest.raises(PolicyValidationError, match="invalid YAML"):
        parse_policies("policies:\n  - name: a\x07\n    scope: global\n", format="yaml")


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        prev = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([prev] * 10)}]")
    lines.append("policies: []")
    with pytest.raises(PolicyValidationError, match="expands to more than"):
        parse_policies("\n".join(lines), format="yaml")
