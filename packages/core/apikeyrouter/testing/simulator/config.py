"""Per-key configuration of the simulated provider and its compact text form.

One small immutable record per key keeps the three ways of configuring the simulator (Python,
the admin API's JSON, the CLI's ``--key sk-a:rpm=60,tpm=10000``) equivalent: they all end up
here, validated the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._coerce import as_bool, opt_float, opt_int
from .faults import Fault, parse_fault_spec

__all__ = ["SimKeyConfig", "mask_key"]


def mask_key(key: str) -> str:
    """Mask a key for messages and labels the way OpenAI does: a short prefix, stars, a tail.

    Short keys (common in tests) keep less than half of their characters visible, so the full
    secret is never echoed back whatever its length.
    """
    n = len(key)
    head = key[: min(5, n // 3)]
    tail = key[-4:] if n >= 16 else ""
    return f"{head}***{tail}"


@dataclass(frozen=True, slots=True)
class SimKeyConfig:
    """How one API key behaves on the simulated provider.

    ``rpm``/``tpm`` are per-minute token-bucket limits (``None`` = unlimited, and then no
    rate-limit headers for that dimension); ``quota`` is a hard total of admitted requests after
    which the key answers ``insufficient_quota``; ``invalid`` makes the key answer 401 like a
    revoked key. ``label`` names the key in statistics (default: the masked key). Latency fields
    override the provider-wide values for this key; ``models`` restricts the key to some models
    (others get 404 ``model_not_found``); ``faults`` are armed when the key is added.
    """

    key: str
    rpm: int | None = None
    tpm: int | None = None
    quota: int | None = None
    invalid: bool = False
    label: str | None = None
    latency_ms: float | None = None
    jitter_ms: float | None = None
    chunk_delay_ms: float | None = None
    models: frozenset[str] | None = None
    faults: tuple[Fault, ...] = ()

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a key config needs a non-empty key")
        for name in ("rpm", "tpm", "quota"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer")
        for name in ("latency_ms", "jitter_ms", "chunk_delay_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        # Callers may pass any iterable; store immutable, hashable forms.
        if self.models is not None:
            object.__setattr__(self, "models", frozenset(self.models))
        object.__setattr__(self, "faults", tuple(self.faults))

    @classmethod
    def parse(cls, spec: str) -> SimKeyConfig:
        """Parse the CLI form ``KEY[:opt,opt,...]``.

        Options: ``rpm=N``, ``tpm=N``, ``quota=N``, ``invalid``, ``label=NAME``,
        ``latency_ms=X``, ``jitter_ms=X``, ``chunk_delay_ms=X``, ``models=a|b`` and (repeatable)
        ``fault=MODE[:COUNT[:PROBABILITY]]``. Example: ``sk-a:rpm=60,tpm=10000,fault=status_500:2``.
        """
        key, _, opts = spec.partition(":")
        data: dict[str, Any] = {"key": key}
        faults: list[Fault] = []
        for raw in filter(None, (part.strip() for part in opts.split(","))):
            name, has_value, value = raw.partition("=")
            if name == "invalid" and not has_value:
                data["invalid"] = True
            elif name == "fault" and has_value:
                faults.append(parse_fault_spec(value))
            elif name == "models" and has_value:
                data["models"] = [m for m in value.split("|") if m]
            elif has_value:
                data[name] = value
            else:
                raise ValueError(f"bad key option {raw!r} in {spec!r}")
        config = cls.from_mapping(data)
        if faults:
            object.__setattr__(config, "faults", config.faults + tuple(faults))
        return config

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SimKeyConfig:
        """Build from a JSON/YAML object (the admin API and ``--keys-file`` use this)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown key config field(s): {', '.join(sorted(unknown))}")
        key = data.get("key")
        if not isinstance(key, str):
            raise ValueError("a key config needs a string 'key'")
        faults_raw = data.get("faults") or ()
        if not isinstance(faults_raw, list | tuple):
            raise ValueError("'faults' must be a list")
        models_raw = data.get("models")
        return cls(
            key=key,
            rpm=opt_int(data.get("rpm"), "rpm"),
            tpm=opt_int(data.get("tpm"), "tpm"),
            quota=opt_int(data.get("quota"), "quota"),
            invalid=as_bool(data.get("invalid", False), "invalid"),
            label=None if data.get("label") is None else str(data["label"]),
            latency_ms=opt_float(data.get("latency_ms"), "latency_ms"),
            jitter_ms=opt_float(data.get("jitter_ms"), "jitter_ms"),
            chunk_delay_ms=opt_float(data.get("chunk_delay_ms"), "chunk_delay_ms"),
            models=None if models_raw is None else frozenset(_str_list(models_raw)),
            faults=tuple(_fault(item) for item in faults_raw),
        )

    def to_public_dict(self) -> dict[str, Any]:
        """A JSON-ready description without the secret (the admin API returns this)."""
        return {
            "key": mask_key(self.key),
            "label": self.label,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "quota": self.quota,
            "invalid": self.invalid,
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "chunk_delay_ms": self.chunk_delay_ms,
            "models": None if self.models is None else sorted(self.models),
        }


def _fault(item: Any) -> Fault:
    if isinstance(item, Fault):
        return item
    if isinstance(item, str):
        return parse_fault_spec(item)
    if isinstance(item, Mapping):
        return Fault.from_mapping(item)
    raise ValueError("each fault must be an object or a 'MODE[:COUNT[:PROB]]' string")


def _str_list(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return [m for m in value.split("|") if m]
    if isinstance(value, list | tuple | set | frozenset) and all(isinstance(m, str) for m in value):
        return value
    raise ValueError("'models' must be a list of model ids")
