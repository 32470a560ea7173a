"""CostController pricing: lookup rules, estimate/actual arithmetic, reconciliation, overrides,
and the pricing table shipped with the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apikeyrouter.domain.components.cost_controller import CostController, parse_model_price
from apikeyrouter.domain.models.cost_model import (
    CostEstimate,
    LongContextPrice,
    ModelPrice,
    PricingError,
)
from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.config.pricing_loader import (
    build_cost_controller,
    load_default_pricing,
    load_pricing_file,
    parse_pricing_document,
    pricing_metadata,
)
from hypothesis import given
from hypothesis import strategies as st

TABLE: dict[str, ModelPrice] = {
    "chat-a": ModelPrice(input=2.0, output=8.0, cached_input=0.5, provider="vendor"),
    "chat-b": ModelPrice(input=1.0, output=4.0, aliases=("chat-b-legacy", "b-latest-name")),
    "azure/chat-a": ModelPrice(input=3.0, output=9.0),
    "longy": ModelPrice(
        input=1.25,
        output=10.0,
        cached_input=0.125,
        long_context=LongContextPrice(
            threshold_tokens=200_000, input=2.5, output=15.0, cached_input=0.25
        ),
    ),
    "embed": ModelPrice(input=0.02, output=0.0, mode="embedding"),
}


@pytest.fixture
def controller() -> CostController:
    return CostController(TABLE)


# --- lookup ------------------------------------------------------------------------------------
def test_exact_match(controller: CostController) -> None:
    assert controller.price_for("chat-a") == TABLE["chat-a"]
    assert controller.canonical_model("chat-a") == "chat-a"


def test_provider_qualified_entry_wins_for_that_provider(controller: CostController) -> None:
    assert controller.price_for("chat-a", provider="azure") == TABLE["azure/chat-a"]
    assert controller.price_for("chat-a", provider="openai") == TABLE["chat-a"]


def test_vendor_prefixed_model_name_is_stripped(controller: CostController) -> None:
    assert controller.canonical_model("vendor/chat-a") == "chat-a"
    assert controller.canonical_model("models/chat-b") == "chat-b"


@pytest.mark.parametrize(
    "name",
    [
        "chat-a-2024-08-06",
        "chat-a-20250514",
        "chat-a@20250514",
        "chat-a-latest",
        "chat-a-0613",
        "chat-a-001",
    ],
)
def test_snapshot_suffix_is_stripped(controller: CostController, name: str) -> None:
    assert controller.canonical_model(name) == "chat-a"


def test_alias(controller: CostController) -> None:
    assert controller.canonical_model("chat-b-legacy") == "chat-b"
    assert controller.canonical_model("b-latest-name") == "chat-b"


def test_unknown_model_is_reported_not_priced(controller: CostController) -> None:
    assert controller.price_for("mystery-9") is None
    estimate = controller.estimate("mystery-9", 100, 100)
    assert estimate.priced is False
    assert estimate.usd is None
    assert estimate.reserve_usd == 0.0
    actual = controller.actual("mystery-10", Usage(prompt_tokens=5, completion_tokens=5))
    assert actual.usd is None
    assert controller.unpriced_models() == {"mystery-9", "mystery-10"}


def test_override_prices_a_previously_unknown_model(controller: CostController) -> None:
    assert controller.price_for("mystery-9") is None  # cached as unknown
    controller.load_overrides({"mystery-9": {"input": 1.0, "output": 2.0}})
    assert controller.price_for("mystery-9") == ModelPrice(input=1.0, output=2.0)
    assert "mystery-9" not in controller.unpriced_models()


def test_real_entry_beats_another_models_alias() -> None:
    table = {
        "x": ModelPrice(input=1, output=1, aliases=("y",)),
        "y": ModelPrice(input=2, output=2),
    }
    assert CostController(table).canonical_model("y") == "y"


# --- arithmetic --------------------------------------------------------------------------------
def test_estimate_arithmetic(controller: CostController) -> None:
    est = controller.estimate("chat-a", 1_000, 500)
    assert est.usd == pytest.approx((1_000 * 2.0 + 500 * 8.0) / 1e6)
    assert est.priced
    assert est.priced_as == "chat-a"
    assert est.completion_tokens == 500


def test_estimate_rejects_negative_tokens(controller: CostController) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        controller.estimate("chat-a", -1, 10)


def test_long_context_tier_applies_past_the_threshold(controller: CostController) -> None:
    at = controller.estimate("longy", 200_000, 1_000)
    past = controller.estimate("longy", 200_001, 1_000)
    assert at.usd == pytest.approx((200_000 * 1.25 + 1_000 * 10.0) / 1e6)
    assert past.usd == pytest.approx((200_001 * 2.5 + 1_000 * 15.0) / 1e6)


def test_actual_prices_cached_tokens_at_cached_rate(controller: CostController) -> None:
    usage = Usage(
        prompt_tokens=1_000,
        completion_tokens=200,
        total_tokens=1_200,
        prompt_tokens_details={"cached_tokens": 600},
    )
    cost = controller.actual("chat-a", usage)
    assert cost.cached_tokens == 600
    assert cost.usd == pytest.approx((400 * 2.0 + 600 * 0.5 + 200 * 8.0) / 1e6)


def test_actual_without_cached_price_bills_cache_hits_as_input(
    controller: CostController,
) -> None:
    usage = Usage(
        prompt_tokens=1_000, completion_tokens=0, prompt_tokens_details={"cached_tokens": 1}
    )
    assert controller.actual("chat-b", usage).usd == pytest.approx(1_000 * 1.0 / 1e6)


def test_actual_clamps_nonsense_cached_counts(controller: CostController) -> None:
    usage = Usage(
        prompt_tokens=10, completion_tokens=0, prompt_tokens_details={"cached_tokens": 99}
    )
    assert controller.actual("chat-a", usage).cached_tokens == 10
    plain = Usage(prompt_tokens=10, completion_tokens=0)
    assert controller.actual("chat-a", plain).cached_tokens == 0


def test_long_context_cached_rate(controller: CostController) -> None:
    usage = Usage(
        prompt_tokens=300_000, completion_tokens=0, prompt_tokens_details={"cached_tokens": 100_000}
    )
    cost = controller.actual("longy", usage)
    assert cost.usd == pytest.approx((200_000 * 2.5 + 100_000 * 0.25) / 1e6)


def test_embedding_costs_only_input(controller: CostController) -> None:
    cost = controller.actual("embed", Usage(prompt_tokens=1_000_000, completion_tokens=0))
    assert cost.usd == pytest.approx(0.02)


@given(
    prompt=st.integers(0, 1_000_000),
    max_completion=st.integers(0, 100_000),
    used_fraction=st.floats(0, 1),
    cached_fraction=st.floats(0, 1),
    model=st.sampled_from(sorted(TABLE)),
)
def test_estimate_is_an_upper_bound_of_the_actual_cost(
    prompt: int, max_completion: int, used_fraction: float, cached_fraction: float, model: str
) -> None:
    controller = CostController(TABLE)
    completion = int(max_completion * used_fraction)
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        prompt_tokens_details={"cached_tokens": int(prompt * cached_fraction)},
    )
    estimate = controller.estimate(model, prompt, max_completion)
    actual = controller.actual(model, usage)
    assert estimate.usd is not None
    assert actual.usd is not None
    assert estimate.usd >= actual.usd - 1e-12


# --- reconciliation ----------------------------------------------------------------------------
def _cost(usd: float | None) -> CostEstimate:
    return CostEstimate(
        model="m", prompt_tokens=0, completion_tokens=0, usd=usd, priced=usd is not None
    )


def test_reconciliation_stats(controller: CostController) -> None:
    assert controller.stats().count == 0
    controller.reconcile(_cost(0.30), _cost(0.20))  # +0.10, rel 0.5
    controller.reconcile(_cost(0.10), _cost(0.20))  # -0.10, rel 0.5
    controller.reconcile(_cost(0.05), _cost(0.0))  # +0.05, no relative error
    controller.reconcile(_cost(None), _cost(0.1))
    stats = controller.stats()
    assert stats.count == 3
    assert stats.estimated_usd_total == pytest.approx(0.45)
    assert stats.actual_usd_total == pytest.approx(0.40)
    assert stats.mean_absolute_error_usd == pytest.approx(0.25 / 3)
    assert stats.bias_usd == pytest.approx(0.05 / 3)
    assert stats.mean_relative_error == pytest.approx(0.5)
    assert stats.max_relative_error == pytest.approx(0.5)
    assert stats.unpriced_count == 1


# --- overrides and validation ------------------------------------------------------------------
def test_override_replaces_whole_entry(controller: CostController) -> None:
    controller.load_overrides({"chat-a": {"input": 1.0, "output": 1.5}})
    price = controller.price_for("chat-a")
    assert price is not None
    assert price.cached_input is None
    assert price.input == 1.0
    assert controller.canonical_model("chat-a-2024-01-01") == "chat-a"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"input": -1, "output": 1}, "field 'input'"),
        ({"input": 1}, "field 'output'"),
        ({"input": 1, "output": 1, "outptu": 2}, "field 'outptu'"),
        ({"input": "cheap", "output": 1}, "field 'input'"),
        ({"input": 1, "output": 1, "long_context": {"input": 1, "output": 1}}, "threshold"),
        ({"input": float("inf"), "output": 1}, "finite"),
        ("1.0", "expected a mapping"),
    ],
)
def test_validation_errors_name_model_and_field(raw: object, fragment: str) -> None:
    controller = CostController(TABLE)
    with pytest.raises(PricingError) as info:
        controller.load_overrides({"my-model": raw})  # type: ignore[dict-item]
    assert "my-model" in info.value.message
    assert fragment in info.value.message
    assert controller.price_for("my-model") is None  # nothing half-applied


def test_parse_model_price_rejects_empty_name() -> None:
    with pytest.raises(PricingError, match="model name"):
        parse_model_price("  ", {"input": 1, "output": 1})


def test_load_pricing_file_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text("models:\n  house-model:\n    input: 0.5\n    output: 1.0\n")
    json_file = tmp_path / "prices.json"
    json_file.write_text(json.dumps({"models": {"gpt-4o": {"input": 2.0, "output": 8.0}}}))
    assert load_pricing_file(yaml_file)["house-model"].output == 1.0
    controller = build_cost_controller(json_file)
    price = controller.price_for("gpt-4o")
    assert price is not None
    assert price.input == 2.0
    assert price.cached_input is None
    assert controller.price_for("claude-haiku-4-5") is not None  # the rest of the table stays


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: [1, 2", "not valid YAML"),
        ("models:\n  a: {input: 1, output: 1}\n  a: {input: 2, output: 2}\n", "duplicate key 'a'"),
        ("prices: {}\n", "'models'"),
        ("- 1\n", "expected a mapping"),
        ("models:\n  bad:\n    input: 1\n    output: -3\n", "'bad': field 'output'"),
    ],
)
def test_bad_pricing_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PricingError) as info:
        load_pricing_file(path)
    assert fragment in info.value.message
    assert str(path) in info.value.message


def test_missing_pricing_file(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read"):
        load_pricing_file(tmp_path / "nope.yaml")


def test_parse_pricing_document_rejects_non_string_names() -> None:
    with pytest.raises(PricingError, match="strings"):
        parse_pricing_document({"models": {1: {"input": 1, "output": 1}}})


# --- the shipped table -------------------------------------------------------------------------
REQUIRED = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o3",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-opus-4-1",
    "claude-opus-4",
    "claude-sonnet-4-5",
    "claude-sonnet-4",
    "claude-3-7-sonnet",
    "claude-haiku-4-5",
    "claude-3-5-haiku",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
]


def test_shipped_table_loads_and_covers_the_required_models() -> None:
    prices = load_default_pricing()
    missing = [m for m in REQUIRED if m not in prices]
    assert not missing
    meta = pricing_metadata()
    assert str(meta["updated"]).startswith("20")
    assert set(meta["sources"]) == {"openai", "anthropic", "google"}


@pytest.mark.parametrize(("name", "price"), sorted(load_default_pricing().items()))
def test_every_shipped_entry_is_sane(name: str, price: ModelPrice) -> None:
    assert price.provider in {"openai", "anthropic", "google"}, name
    assert price.input > 0
    if price.mode == "embedding":
        assert price.output == 0
    else:
        assert price.output >= price.input
    if price.cached_input is not None:
        assert 0 < price.cached_input < price.input
    lc = price.long_context
    if lc is not None:
        assert lc.input >= price.input
        assert lc.output >= price.output
        if lc.cached_input is not None and price.cached_input is not None:
            assert lc.cached_input >= price.cached_input


def test_shipped_aliases_are_unambiguous() -> None:
    prices = load_default_pricing()
    seen: dict[str, str] = {}
    for name, price in prices.items():
        for alias in price.aliases:
            assert alias not in prices, f"alias {alias} of {name} shadows an entry"
            assert alias not in seen, f"alias {alias} used by {seen.get(alias)} and {name}"
            seen[alias] = name


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gpt-3.5-turbo-instruct-0914", "gpt-3.5-turbo-instruct"),
    ],
)
def test_shipped_table_resolves_real_model_ids(name: str, canonical: str) -> None:
    assert CostController.default().canonical_model(name) == canonical


def test_default_controller_matches_loader() -> None:
    assert CostController().models() == sorted(load_default_pricing())


def test_known_published_prices() -> None:
    """A few spot checks against the published pages (see the file's sources)."""
    c = CostController.default()
    four_o = c.estimate("gpt-4o", 1_000_000, 1_000_000)
    assert four_o.usd == pytest.approx(12.5)
    usage = Usage(
        prompt_tokens=100_000,
        completion_tokens=0,
        prompt_tokens_details={"cached_tokens": 100_000},
    )
    assert c.actual("claude-sonnet-4-5", usage).usd == pytest.approx(0.03)
    long_prompt = c.estimate("gemini-2.5-pro", 300_000, 0)
    assert long_prompt.usd == pytest.approx(300_000 * 2.50 / 1e6)
