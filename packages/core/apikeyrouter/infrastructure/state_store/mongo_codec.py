"""Document shapes of the MongoDB state store, and the pure window arithmetic on them.

Kept apart from the store so the stored format lives in one place (what one replica writes, every
other replica and every later version must read back), and so reservation planning is plain
code with no I/O.

Exact numbers. A float the store must read back bit for bit (bucket amounts, times) is written
inside an embedded document or array, or by an insert or replace, never as the bare operand of
``$set``/``$inc``/``$max``. Real MongoDB keeps doubles exact either way, but nx-27017 (the
wire-compatible server the tests run against) renders such scalar operands with 15 significant
digits. Money in the usage ledger is integer nano-USD: concurrent ``$inc`` of integers is exact
and order-independent, float sums are neither.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from apikeyrouter.domain.interfaces.state_store import (
    CircuitSnapshot,
    CircuitState,
    ReservationRequest,
    WindowLimit,
)
from apikeyrouter.domain.models.api_key import APIKey, StateTransition
from apikeyrouter.domain.models.cost_model import Budget
from apikeyrouter.domain.models.policy import Policy
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.infrastructure.state_store.window_counter import WindowCounter
from apikeyrouter.utils.encryption import looks_encrypted

RawDoc = dict[str, Any]

#: Counter documents outlive their longest window by this much (wall clock) before the TTL
#: monitor may drop them, so replica clock skew never drops a live bucket.
COUNTER_EXPIRY_GRACE_SECONDS = 300.0
NANOS_PER_USD = 1_000_000_000


def new_rev() -> int:
    """A random revision for optimistic compare-and-swap. Random rather than counted, so a
    document that is deleted and created again can never repeat a revision a slow writer still
    holds (no ABA)."""
    return secrets.randbits(62)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


class Sequence64:
    """Strictly increasing int64 order stamps: wall-clock nanoseconds, bumped past the last one.

    Orders audit records, decisions and keys as the memory store's lists do within one process
    (append order) and by time across replicas, without a shared counter round trip."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self, now_ns: int) -> int:
        self._last = max(self._last + 1, now_ns)
        return self._last


# --- usage windows ----------------------------------------------------------------------------


class StoredWindow(WindowCounter):
    """A :class:`WindowCounter` that round-trips through a document as ``[[index, amount]]``.

    The ring itself is stored (one pair per occupied slot), not a digest of it, so every
    operation runs the memory store's own code on the same state and gives bit-identical results.
    """

    __slots__ = ()

    @classmethod
    def from_pairs(cls, window_seconds: float, pairs: Iterable[Sequence[float]]) -> StoredWindow:
        counter = cls(window_seconds)
        size = len(counter._indexes)
        for idx, amount in pairs:
            slot = int(idx) % size
            counter._indexes[slot] = int(idx)
            counter._amounts[slot] = float(amount)
            counter._newest = max(counter._newest, int(idx))
        return counter

    def pairs(self) -> list[list[int | float]]:
        return [
            [idx, amount]
            for idx, amount in zip(self._indexes, self._amounts, strict=True)
            if idx != -1
        ]


WindowId = tuple[str, float]


@dataclass
class CounterDoc:
    """Every window of one counter owner (a key, or a shared counter such as a budget).

    ``rev`` is None when no document exists yet. ``pending`` maps the token of an in-flight
    multi-document reservation to the wall-clock time after which it counts as settled.
    """

    owner: str
    rev: int | None = None
    windows: dict[WindowId, StoredWindow] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, owner: str, raw: Mapping[str, Any] | None) -> CounterDoc:
        if raw is None:
            return cls(owner)
        windows = {
            (str(w["m"]), float(w["s"])): StoredWindow.from_pairs(float(w["s"]), w["b"])
            for w in raw.get("w", [])
        }
        pending = {str(k): float(v) for k, v in (raw.get("p") or {}).items()}
        return cls(owner, int(raw["rev"]), windows, pending)

    def counter(self, limit: WindowLimit) -> StoredWindow:
        window_id = (limit.metric, float(limit.window_seconds))
        counter = self.windows.get(window_id)
        if counter is None:
            counter = self.windows[window_id] = StoredWindow(limit.window_seconds)
        return counter

    def unsettled(self, wall_now: float) -> bool:
        """True while another writer's multi-document reservation may still roll back here."""
        return any(deadline > wall_now for deadline in self.pending.values())

    def to_raw(self, rev: int, wall_now: float, marker: tuple[str, float] | None = None) -> RawDoc:
        """The document to write: expired pending markers dropped, ``marker`` added."""
        pending = {k: v for k, v in self.pending.items() if v > wall_now}
        if marker is not None:
            pending[marker[0]] = marker[1]
        longest = max((c.window_seconds + c.width for c in self.windows.values()), default=0.0)
        return {
            "_id": self.owner,
            "rev": rev,
            "w": [
                {"m": metric, "s": seconds, "b": counter.pairs()}
                for (metric, seconds), counter in self.windows.items()
            ],
            "p": pending,
            "exp": utc(wall_now + longest + COUNTER_EXPIRY_GRACE_SECONDS),
        }


Check = tuple[str, WindowLimit, float]


def reservation_checks(candidate: ReservationRequest) -> list[Check]:
    """The counters a candidate must fit in, exactly as the memory store picks them: the key's
    windows whose metric has a non-zero amount, and every shared counter."""
    checks = [
        (candidate.key_id, limit, amount)
        for limit in candidate.limits
        if (amount := candidate.amounts.get(limit.metric, 0.0))
    ]
    checks.extend((s.counter_id, s.limit, s.amount) for s in candidate.shared)
    return checks


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """The outcome of evaluating candidates on one snapshot of their counter documents.

    ``chosen`` is the index of the granted candidate and ``writes`` the new state of every
    document it touches; ``settling`` means a refusal might only be caused by another writer's
    reservation that has not settled yet, so the caller should look again shortly."""

    chosen: int | None
    writes: dict[str, CounterDoc]
    checks: tuple[Check, ...] = ()
    retry_at: float | None = None
    settling: bool = False


def plan_reservation(
    candidates: Sequence[ReservationRequest],
    docs: Mapping[str, CounterDoc],
    now: float,
    wall_now: float,
) -> ReservationPlan:
    """The memory store's ``reserve`` loop, run on documents instead of in-process counters.

    Mutates the documents of the chosen candidate (they are fresh copies per attempt)."""
    earliest: float | None = None
    for index, candidate in enumerate(candidates):
        checks = reservation_checks(candidate)
        counters = [(docs[owner], docs[owner].counter(limit)) for owner, limit, _ in checks]
        blocked = never = settling = False
        blocked_until = now
        for (doc, counter), (_, limit, amount) in zip(counters, checks, strict=True):
            if not counter.fits(now, amount, limit.limit):
                blocked = True
                at = counter.retry_at(now, amount, limit.limit)
                if at is None:
                    never = True
                else:
                    blocked_until = max(blocked_until, at)
                    settling = settling or doc.unsettled(wall_now)
        if not blocked:
            for (_, counter), (_, _, amount) in zip(counters, checks, strict=True):
                counter.add(now, amount)
            writes = {doc.owner: doc for doc, _ in counters}
            return ReservationPlan(index, writes, tuple(checks))
        if never:
            continue
        if settling:
            return ReservationPlan(None, {}, settling=True)
        earliest = blocked_until if earliest is None else min(earliest, blocked_until)
    return ReservationPlan(None, {}, retry_at=earliest)


# --- circuits ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CircuitRecord:
    """The memory store's circuit breaker as an immutable value (see ``memory_store._Circuit``)."""

    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    open_until: float | None = None
    probe: bool = False

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any] | None) -> CircuitRecord:
        if raw is None:
            return cls()
        c = raw["c"]
        open_until = c.get("open_until")
        return cls(
            CircuitState(c["state"]),
            int(c["failures"]),
            None if open_until is None else float(open_until),
            bool(c["probe"]),
        )

    def to_raw(self) -> RawDoc:
        return {
            "state": self.state.value,
            "failures": self.failures,
            "open_until": self.open_until,
            "probe": self.probe,
        }

    def refreshed(self, now: float) -> CircuitRecord:
        if (
            self.state is CircuitState.OPEN
            and self.open_until is not None
            and now >= self.open_until
        ):
            return replace(self, state=CircuitState.HALF_OPEN, probe=False)
        return self

    def snapshot(self) -> CircuitSnapshot:
        return CircuitSnapshot(self.state, self.failures, self.open_until, self.probe)


# --- keys -------------------------------------------------------------------------------------

# Fields kept at the top level of a key document (queried, or rewritten by compare-and-set);
# everything else of the model lives in the ``config`` sub-document.
_TOP_LEVEL = frozenset(
    {"id", "provider_id", "fingerprint", "state", "state_reason", "state_changed_at"}
)
_SORTED_SETS = ("tags", "excluded_models", "models")


def encode_key(key: APIKey) -> RawDoc:
    """The ``$set`` fields of a key document. ``encrypted_material`` is excluded from
    ``model_dump`` (to keep it out of APIs and logs), so it is added explicitly: it is
    ciphertext, and the store is where it has to persist. ``metadata`` is JSON text because its
    keys are the user's and may contain ``.`` or start with ``$``."""
    if not looks_encrypted(key.encrypted_material):
        raise ValueError(
            f"refusing to store key {key.id}: encrypted_material is not KeyEncryptor "
            "ciphertext (encrypt the secret before storing it)"
        )
    data = key.model_dump(mode="json")
    metadata = data.pop("metadata")
    cooldown_until = data.pop("cooldown_until")
    for name in _SORTED_SETS:
        if data.get(name) is not None:
            data[name] = sorted(data[name])
    return {
        "provider_id": key.provider_id,
        "fingerprint": key.fingerprint,
        "state": key.state.value,
        "encrypted_material": key.encrypted_material,
        "status": status_doc(key.state_reason, key.state_changed_at, cooldown_until),
        "config": {k: v for k, v in data.items() if k not in _TOP_LEVEL},
        "metadata_json": json.dumps(metadata, separators=(",", ":"), sort_keys=True),
    }


def status_doc(reason: str | None, changed_at: float, cooldown_until: float | None) -> RawDoc:
    return {"reason": reason, "changed_at": changed_at, "cooldown_until": cooldown_until}


def decode_key(raw: Mapping[str, Any]) -> APIKey:
    status = raw["status"]
    return APIKey.model_validate(
        {
            **raw["config"],
            "id": raw["_id"],
            "provider_id": raw["provider_id"],
            "fingerprint": raw["fingerprint"],
            "encrypted_material": raw["encrypted_material"],
            "state": raw["state"],
            "state_reason": status["reason"],
            "state_changed_at": status["changed_at"],
            "cooldown_until": status["cooldown_until"],
            "metadata": json.loads(raw["metadata_json"]),
        }
    )


def cooldown_doc(until: float | None) -> RawDoc | None:
    return None if until is None else {"until": until}


def cooldown_of(raw: Mapping[str, Any] | None) -> float | None:
    value = None if raw is None else raw.get("cooldown")
    return None if value is None else float(value["until"])


# --- audit and decisions ----------------------------------------------------------------------


def encode_transition(transition: StateTransition, audit_id: str, seq: int) -> RawDoc:
    return {"_id": audit_id, "seq": seq, **transition.model_dump(mode="json")}


def decode_transition(raw: Mapping[str, Any]) -> StateTransition:
    return StateTransition.model_validate({k: v for k, v in raw.items() if k not in ("_id", "seq")})


def encode_decision(decision: RoutingDecision, seq: int, expire_at: datetime) -> RawDoc:
    """Queryable fields at the top level; the whole decision as JSON text, because its
    ``excluded`` reasons and score components are free-form mapping keys."""
    return {
        "seq": seq,
        "expire_at": expire_at,
        "request_id": decision.request_id,
        "model": decision.model,
        "chosen_key_id": decision.chosen_key_id,
        "provider_id": decision.provider_id,
        "at": decision.at,
        "json": decision.model_dump_json(),
    }


def decode_decision(raw: Mapping[str, Any]) -> RoutingDecision:
    return RoutingDecision.model_validate_json(raw["json"])


# --- policies and budgets ---------------------------------------------------------------------


def encode_policies(policies: Sequence[Policy], rev: int, saved_at: datetime) -> RawDoc:
    return {
        "_id": rev,
        "saved_at": saved_at,
        "policies": [p.model_dump(mode="json") for p in policies],
    }


def decode_policies(raw: Mapping[str, Any]) -> list[Policy]:
    return [Policy.model_validate(p) for p in raw["policies"]]


def decode_budget(raw: Mapping[str, Any]) -> Budget:
    return Budget.model_validate(raw["budget"])


# --- usage ledger -----------------------------------------------------------------------------

LedgerField = Literal["key_id", "provider_id", "model", "client_id", "day"]
LEDGER_FIELDS: tuple[LedgerField, ...] = ("key_id", "provider_id", "model", "client_id", "day")


class UsageTotals(BaseModel):
    """Usage summed over the ledger rows of one group. Fields not grouped by are None (so is
    ``client_id`` for requests without a client)."""

    key_id: str | None = None
    provider_id: str | None = None
    model: str | None = None
    client_id: str | None = None
    day: str | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def ledger_day(day: str | date) -> str:
    """``YYYY-MM-DD`` (UTC calendar day, like budget periods); strings are validated."""
    if isinstance(day, datetime):
        day = day.astimezone(UTC).date() if day.tzinfo else day.date()
    if isinstance(day, date):
        return day.isoformat()
    return date.fromisoformat(day).isoformat()


def ledger_id(key_id: str, provider_id: str, model: str, client_id: str | None, day: str) -> str:
    """One row per (key, provider, model, client, day). JSON, so no separator is ambiguous."""
    return orjson.dumps([key_id, provider_id, model, client_id, day]).decode()


def usd_to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def summarise_usage(
    rows: Iterable[Mapping[str, Any]], group_by: Sequence[LedgerField]
) -> list[UsageTotals]:
    """Sum ledger rows per group in Python (portable: no ``$group`` on compound keys needed)."""
    totals: dict[tuple[str | None, ...], list[int]] = {}
    for row in rows:
        group = tuple(row.get(name) for name in group_by)
        acc = totals.setdefault(group, [0, 0, 0, 0])
        acc[0] += int(row.get("requests", 0))
        acc[1] += int(row.get("prompt_tokens", 0))
        acc[2] += int(row.get("completion_tokens", 0))
        acc[3] += int(row.get("cost_nanos", 0))
    result = []
    for group in sorted(totals, key=lambda g: tuple("" if v is None else v for v in g)):
        requests, prompt, completion, nanos = totals[group]
        result.append(
            UsageTotals(
                **dict(zip(group_by, group, strict=True)),
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=nanos / NANOS_PER_USD,
            )
        )
    return result


def expiry(seconds_from_now: float, wall_now: float) -> datetime:
    return utc(wall_now) + timedelta(seconds=seconds_from_now)
