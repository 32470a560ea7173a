"""Property-based: every operation of the app's own OpenAPI document, fed generated valid and
invalid input, never answers 5xx. Schemathesis drives the ASGI app in process (it runs the
lifespan itself); the upstream is the simulated provider, also in process."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimKeyConfig, SimulatedProvider
from apikeyrouter_proxy.main import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from .conftest import KEY_A, KEY_B
from .support import ADMIN, make_config

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def schema() -> Any:
    sim = SimulatedProvider(seed=5)
    sim.add_key(SimKeyConfig(key=KEY_A, label="a"))
    sim.add_key(SimKeyConfig(key=KEY_B, label="b"))
    config = make_config(
        [{"id": "a", "key": KEY_A, "tags": ["primary"]}, {"id": "b", "key": KEY_B}],
        policies=[{"name": "base", "scope": "global", "deny_tags": ["preview"]}],
        budgets=[{"id": "day-cap", "scope": "global", "limit_usd": 5, "period": "day"}],
        model_groups=[{"name": "smart", "members": ["sim/gpt-4o-mini"]}],
    )
    app = create_app(config, transport=ASGITransport(sim))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schema_documents_the_management_api(schema: Any) -> None:
    paths = set(schema.raw_schema["paths"])
    assert {
        "/api/v1/keys",
        "/api/v1/keys/{key_id}",
        "/api/v1/keys/{key_id}/rotate",
        "/api/v1/keys/{key_id}/quota",
        "/api/v1/providers",
        "/api/v1/providers/{provider_id}/health",
        "/api/v1/state/summary",
        "/api/v1/state/decisions",
        "/api/v1/state/audit",
        "/api/v1/state/spend",
        "/api/v1/policies",
        "/api/v1/policies/{policy_name}",
        "/api/v1/policies/validate",
        "/api/v1/policies/dry-run",
        "/api/v1/budgets",
        "/api/v1/budgets/{budget_id}",
        "/api/v1/model-groups",
        "/api/v1/model-groups/{group_name}",
        "/health/live",
        "/health/ready",
    } <= paths
    assert "AdminToken" in schema.raw_schema["components"]["securitySchemes"]


#: Path parameters that name things that exist, so generated input reaches real keys and
#: providers instead of stopping at a 404 (revocation is left out: it would end the run early).
KNOWN = {
    "key_id": "a",
    "provider_id": "sim",
    "policy_name": "base",
    "budget_id": "day-cap",
    "group_name": "smart",
}


@pytest.mark.parametrize(
    ("mode", "known_ids"),
    [
        (GenerationMode.POSITIVE, False),
        (GenerationMode.POSITIVE, True),
        (GenerationMode.NEGATIVE, False),
    ],
)
def test_no_operation_answers_5xx(schema: Any, mode: GenerationMode, known_ids: bool) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 29
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        if known_ids and (not names or operation.method.upper() == "DELETE"):
            continue
        fixed = {name: KNOWN[name] for name in names} if known_ids else None

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        def check(case: Any) -> None:
            response = case.call(headers=ADMIN)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:
            # An operation without any input (GET /health/live) has nothing to make invalid.
            assert mode is GenerationMode.NEGATIVE
