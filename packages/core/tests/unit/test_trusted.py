"""trusted() builds exactly what model_construct builds, and refuses what it cannot build."""

from __future__ import annotations

from typing import Any

import pytest
from apikeyrouter.domain.models.cost_model import CostEstimate
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent, RoutingObjective
from apikeyrouter.domain.models.response import AttemptRecord, RouterResponse, Usage
from apikeyrouter.domain.models.routing_decision import CandidateScore, RoutingDecision
from apikeyrouter.domain.models.trusted import trusted
from pydantic import BaseModel, PrivateAttr

DECISION: dict[str, Any] = {
    "request_id": "req-1",
    "objective": RoutingObjective.QUOTA,
    "model": "gpt-4o-mini",
    "chosen_key_id": "k1",
    "provider_id": "openai",
    "candidates": [CandidateScore("k1", "openai", 0.9, {"headroom": 0.9})],
    "considered": 2,
    "excluded": {"cooling_down": 1},
    "attempt": 1,
    "notes": [],
    "at": 1.5,
}
USAGE: dict[str, Any] = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
CASES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (RoutingDecision, DECISION),
    (Usage, USAGE),
    (
        AttemptRecord,
        {"key_id": "k1", "provider_id": "p", "outcome": "success", "status": 200, "latency_ms": 1},
    ),
    (
        CostEstimate,
        {
            "model": "m",
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "cached_tokens": 0,
            "usd": 0.5,
            "priced": True,
            "priced_as": "m",
        },
    ),
    (
        RequestIntent,
        {
            "endpoint": Endpoint.CHAT,
            "model": "m",
            "body": {"model": "m"},
            "stream": False,
            "max_tokens": None,
            "client_id": None,
            "request_id": "req-2",
            "objective": None,
            "timeout_seconds": None,
            "metadata": {},
        },
    ),
    (
        RouterResponse,
        {
            "body": {"choices": []},
            "key_used": "k1",
            "provider_id": "p",
            "model": "m",
            "usage": Usage(**USAGE),
            "decision": RoutingDecision(**DECISION),
            "attempts": [],
            "latency_ms": 1.0,
            "cost_usd": None,
            "raw_body": b'{"choices":[]}',
        },
    ),
]


@pytest.mark.parametrize(("cls", "values"), CASES, ids=[cls.__name__ for cls, _ in CASES])
def test_the_same_instance_as_model_construct(cls: type[BaseModel], values: dict[str, Any]) -> None:
    built = trusted(cls, **values)
    expected = cls.model_construct(**values)
    assert built == expected
    assert built.model_fields_set == expected.model_fields_set
    assert built.model_extra == expected.model_extra
    assert built.model_dump() == expected.model_dump()
    assert cls.model_validate(built.model_dump()).model_dump() == built.model_dump()  # valid


def test_extra_fields_work_on_a_model_that_allows_them() -> None:
    usage = trusted(Usage, **USAGE)
    usage.prompt_tokens_details = {"cached_tokens": 2}  # type: ignore[attr-defined]
    assert usage.model_dump()["prompt_tokens_details"] == {"cached_tokens": 2}


def test_a_missing_or_unknown_field_is_refused() -> None:
    partial = {k: v for k, v in DECISION.items() if k != "at"}
    with pytest.raises(TypeError, match=r"missing \['at'\]"):
        trusted(RoutingDecision, **partial)
    with pytest.raises(TypeError, match=r"unknown \['colour'\]"):
        trusted(RoutingDecision, **DECISION, colour="red")


def test_a_model_with_private_state_is_refused() -> None:
    class WithPrivate(BaseModel):
        name: str
        _cache: dict[str, int] = PrivateAttr(default_factory=dict)

    with pytest.raises(TypeError, match="model_construct"):
        trusted(WithPrivate, name="x")


def test_a_model_with_its_own_allocation_is_refused() -> None:
    class Interned(BaseModel):
        name: str

        def __new__(cls, *args: Any, **kwargs: Any) -> Interned:
            return super().__new__(cls)

    with pytest.raises(TypeError, match="model_construct"):
        trusted(Interned, name="x")


def test_assigning_a_field_afterwards_works_and_keeps_the_fields_set() -> None:
    record = trusted(
        AttemptRecord, key_id="k1", provider_id="p", outcome="success", status=200, latency_ms=1.0
    )
    record.latency_ms = 2.5
    assert record.latency_ms == 2.5
    assert record.model_fields_set == set(AttemptRecord.model_fields)
    assert record.__pydantic_private__ is None
