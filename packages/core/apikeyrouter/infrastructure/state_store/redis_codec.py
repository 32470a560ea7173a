"""Key names and (de)serialisation for the Redis state store.

Kept apart from the store so the wire format is in one place: what a replica writes, every
other replica (and every later version) must read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from apikeyrouter.domain.models.api_key import APIKey, StateTransition
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.utils.encryption import looks_encrypted

_GLOB_SPECIAL = frozenset("*?[]\\")


def num(value: float) -> str:
    """Exact text for a float: ``repr`` round-trips, and Lua's ``tonumber`` parses it exactly."""
    return repr(float(value))


def opt_num(value: float | None) -> str:
    return "" if value is None else num(value)


def parse_opt_num(value: str | bytes | None) -> float | None:
    if value is None:
        return None
    value = text(value)
    return None if value == "" else float(value)


def text(value: str | bytes) -> str:
    """Replies are ``str`` with ``decode_responses=True`` and ``bytes`` otherwise; accept both
    so a caller may hand in a client configured either way."""
    return value.decode() if isinstance(value, bytes) else value


def glob_escape(value: str) -> str:
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in value)


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Every key and channel the store uses lives under ``prefix``, so tenants and tests can
    share one server and be cleaned up by prefix."""

    prefix: str

    def key(self, key_id: str) -> str:
        return f"{self.prefix}key:{key_id}"

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}key:"

    @property
    def keys_index(self) -> str:
        return f"{self.prefix}keys"

    @property
    def provider_index_prefix(self) -> str:
        return f"{self.prefix}provider:"

    def provider_index(self, provider_id: str) -> str:
        return f"{self.provider_index_prefix}{provider_id}"

    @property
    def sequence(self) -> str:
        return f"{self.prefix}seq"

    def cooldown(self, key_id: str) -> str:
        return f"{self.prefix}cooldown:{key_id}"

    def circuit(self, key_id: str) -> str:
        return f"{self.prefix}circuit:{key_id}"

    def window(self, counter_id: str, metric: str, window_seconds: float) -> str:
        # The id is length-prefixed so ids containing ':' cannot collide with each other.
        return f"{self.prefix}w:{len(counter_id)}:{counter_id}:{metric}:{num(window_seconds)}"

    def window_pattern(self, counter_id: str) -> str:
        """SCAN pattern for every window of one counter (used when a key is deleted)."""
        return glob_escape(f"{self.prefix}w:{len(counter_id)}:{counter_id}:") + "*"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}decisions"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"


# --- API keys -------------------------------------------------------------------------------
# The hash holds the immutable-ish document as JSON plus the fields Lua scripts rewrite (the
# state for compare-and-set, the ciphertext for master key rotation), stored separately so a
# script never has to parse or re-encode JSON.


def encode_key(key: APIKey) -> list[str]:
    """Flat field/value list for HSET. ``encrypted_material`` is excluded from ``model_dump``
    to keep it out of APIs and logs, so it is added explicitly: it is ciphertext, and the
    store is where it has to persist."""
    if not looks_encrypted(key.encrypted_material):
        raise ValueError(
            f"refusing to store key {key.id}: encrypted_material is not KeyEncryptor "
            "ciphertext (encrypt the secret before storing it)"
        )
    return [
        "doc",
        orjson.dumps(key.model_dump(mode="json")).decode(),
        "encrypted_material",
        key.encrypted_material,
        "provider_id",
        key.provider_id,
        "state",
        key.state.value,
        "state_reason",
        orjson.dumps(key.state_reason).decode(),
        "state_changed_at",
        num(key.state_changed_at),
        "cooldown_until",
        opt_num(key.cooldown_until),
    ]


def decode_key(fields: Mapping[str, str]) -> APIKey:
    data: dict[str, Any] = orjson.loads(fields["doc"])
    material = fields.get("encrypted_material")
    if material is not None:  # records written before it had its own field keep it in doc
        data["encrypted_material"] = material
    data["state"] = fields["state"]
    data["state_reason"] = orjson.loads(fields["state_reason"])
    data["state_changed_at"] = float(fields["state_changed_at"])
    data["cooldown_until"] = parse_opt_num(fields.get("cooldown_until"))
    return APIKey.model_validate(data)


def pairs_to_dict(flat: list[Any]) -> dict[str, str]:
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


# --- audit and decisions --------------------------------------------------------------------


def encode_transition(transition: StateTransition) -> str:
    """``key_id`` is the first field, so :func:`audit_needle` can find a key's entries by
    prefix in Lua without decoding JSON."""
    data = transition.model_dump(mode="json")
    return orjson.dumps({"key_id": data.pop("key_id"), **data}).decode()


def audit_needle(key_id: str) -> str:
    return orjson.dumps({"key_id": key_id}).decode()[:-1] + ","


def decode_transition(raw: str | bytes) -> StateTransition:
    return StateTransition.model_validate_json(raw)


_COMPUTED_DECISION_FIELDS = set(RoutingDecision.model_computed_fields)


def encode_decision(decision: RoutingDecision) -> str:
    """Without the explanation: it is computed from the other fields whenever a decoded
    decision is read, so storing it would only format it once more per request (records
    written with it still decode, the field being ignored on input)."""
    return decision.model_dump_json(exclude=_COMPUTED_DECISION_FIELDS)


def decode_decision(raw: str | bytes) -> RoutingDecision:
    return RoutingDecision.model_validate_json(raw)


# --- change events --------------------------------------------------------------------------


def encode_event(event: Mapping[str, Any]) -> str:
    return orjson.dumps(event).decode()


def decode_event(raw: str | bytes) -> dict[str, Any] | None:
    """A malformed event is dropped (None), never raised: one bad publisher must not take
    down every replica's listener."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    return event
