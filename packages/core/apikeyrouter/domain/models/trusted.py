"""Building pydantic models from values the code already checked, at the cost of a dataclass.

``BaseModel.model_construct`` skips validation but still walks every field (aliases, defaults)
on each call: measured at 5-7 us per model, and a routed request builds several. On the hot
path every field is known, so :func:`trusted` sets the instance dictionary directly. It accepts
only models it can build exactly as ``model_construct`` would (no private attributes, no
``model_post_init``, not a root model) and only a complete set of fields, so a field added to a
model later cannot be silently left unset: the first call raises instead.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
# BaseModel's own slot descriptors, called directly: object.__setattr__ looks each name up
# through the class first, and cls.__new__ goes through the model metaclass (measured at about
# 40% of this function's cost).
_slots = BaseModel.__dict__
_set_dict = _slots["__dict__"].__set__
_set_fields_set = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__
#: Classes checked once: class -> (its field names, whether extra fields are allowed).
_checked: dict[type[BaseModel], tuple[frozenset[str], bool]] = {}


def _check(cls: type[BaseModel]) -> tuple[frozenset[str], bool]:
    if (
        cls.__pydantic_root_model__
        or cls.__private_attributes__
        or cls.__pydantic_post_init__
        or cls.__new__ is not _new  # a model allocating its own way is built its own way
    ):
        raise TypeError(f"{cls.__name__} cannot be built by trusted(); use model_construct")
    checked = _checked[cls] = (
        frozenset(cls.__pydantic_fields__),
        cls.model_config.get("extra") == "allow",
    )
    return checked


def trusted(cls: type[M], **values: Any) -> M:
    """An instance of ``cls`` holding ``values`` (every field, already valid) as they are."""
    try:
        names, allows_extra = _checked[cls]
    except KeyError:
        names, allows_extra = _check(cls)
    if values.keys() != names:
        missing = sorted(names - values.keys())
        unknown = sorted(values.keys() - names)
        raise TypeError(f"trusted({cls.__name__}): missing {missing}, unknown {unknown}")
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, set(names))
    _set_extra(model, {} if allows_extra else None)
    _set_private(model, None)
    return model
