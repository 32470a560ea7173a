"""Read pricing tables: the one shipped inside the package, and a user's YAML/JSON override.

File reading lives here, not in the domain: :class:`CostController` takes a mapping. The file
format is ``{models: {<name>: {input, output, cached_input?, provider?, aliases?, mode?,
long_context?, notes?}}}`` with prices in USD per 1M tokens; other top-level keys
(``updated``, ``sources``...) are documentation and are returned by :func:`pricing_metadata`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from apikeyrouter.domain.components.cost_controller import CostController, parse_model_price
from apikeyrouter.domain.models.cost_model import ModelPrice, PricingError

DATA_PACKAGE = "apikeyrouter.data"
PRICING_FILE = "pricing.yaml"


class _StrictLoader(yaml.SafeLoader):
    """``safe_load`` that rejects duplicate keys: with plain YAML the second ``gpt-4o:`` entry
    silently wins, and a pricing mistake should fail loudly instead."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            mark = key_node.start_mark
            raise PricingError(f"duplicate key {key!r} at line {mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _parse_text(text: str, *, source: str, json_format: bool) -> Any:
    try:
        if json_format:
            return json.loads(text)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except PricingError as exc:
        raise PricingError(f"{source}: {exc.message}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = "JSON" if json_format else "YAML"
        raise PricingError(f"{source}: not valid {kind}: {exc}") from None


def parse_pricing_document(document: Any, *, source: str = "pricing") -> dict[str, ModelPrice]:
    """Validate a parsed document; every error names the source, the model and the field."""
    if not isinstance(document, dict):
        raise PricingError(f"{source}: expected a mapping with a 'models' key")
    models = document.get("models")
    if not isinstance(models, dict) or not models:
        raise PricingError(f"{source}: 'models' must be a non-empty mapping of model to prices")
    prices: dict[str, ModelPrice] = {}
    for name, raw in models.items():
        if not isinstance(name, str):
            raise PricingError(f"{source}: model names must be strings, got {name!r}")
        try:
            prices[name] = parse_model_price(name, raw)
        except PricingError as exc:
            raise PricingError(f"{source}: {exc.message}") from None
    return prices


def _read_default_document() -> Any:
    text = resources.files(DATA_PACKAGE).joinpath(PRICING_FILE).read_text(encoding="utf-8")
    return _parse_text(text, source=PRICING_FILE, json_format=False)


@lru_cache(maxsize=1)
def _default_prices() -> dict[str, ModelPrice]:
    return parse_pricing_document(_read_default_document(), source=PRICING_FILE)


def load_default_pricing() -> dict[str, ModelPrice]:
    """The table shipped with the package (parsed once per process; entries are frozen)."""
    return dict(_default_prices())


def pricing_metadata() -> dict[str, Any]:
    """The shipped table's top-level notes (``updated``, ``sources``...), for display."""
    document = _read_default_document()
    return {k: v for k, v in document.items() if k != "models"}


def load_pricing_file(path: str | Path) -> dict[str, ModelPrice]:
    """A user's pricing file (``.json`` as JSON, anything else as YAML)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricingError(f"{file}: cannot read pricing file: {exc.strerror}") from None
    document = _parse_text(text, source=str(file), json_format=file.suffix.lower() == ".json")
    return parse_pricing_document(document, source=str(file))


def build_cost_controller(
    overrides: str | Path | None = None, *, clock: Callable[[], float] = time.time
) -> CostController:
    """The shipped table, with a user's file (if any) replacing or adding entries."""
    controller = CostController(load_default_pricing(), clock=clock)
    if overrides is not None:
        controller.load_overrides(load_pricing_file(overrides))
    return controller
