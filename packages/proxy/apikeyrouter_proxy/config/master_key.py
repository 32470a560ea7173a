"""The master key that encrypts key material at rest, read from ``APIKEYROUTER_MASTER_KEY``.

With the in-memory store an ephemeral key is fine: the ciphertext dies with the process. A
shared or durable store keeps ciphertext that other replicas, and the next start of this one,
must decrypt, so those stores refuse to start without a configured key. The check runs where
the configuration is validated (``check-config``, ``serve`` before uvicorn starts, and the app
factory), so a missing or malformed key is one clear error, not a traceback from a worker.
"""

from __future__ import annotations

from collections.abc import Mapping

from apikeyrouter.utils.encryption import MASTER_KEY_ENV, KeyEncryptor
from apikeyrouter.utils.exceptions import ConfigurationError

from apikeyrouter_proxy.config.schema import SHARED_STORE_KINDS, StoreConfig

__all__ = ["MASTER_KEY_ENV", "master_key_problem", "resolve_master_key"]

_HOW_TO = (
    '32 random bytes, urlsafe base64; generate one with: python -c "from '
    'apikeyrouter.utils.encryption import generate_master_key; print(generate_master_key())"'
)


def master_key_problem(store: StoreConfig, env: Mapping[str, str]) -> str | None:
    """Why ``store`` cannot run with the master key in ``env`` (never quoting it), or None."""
    if store.kind not in SHARED_STORE_KINDS:
        return None
    value = env.get(MASTER_KEY_ENV)
    if not value:
        return (
            f"the {store.kind} store keeps key material at rest and needs {MASTER_KEY_ENV} "
            f"({_HOW_TO}); every replica must use the same one"
        )
    try:
        KeyEncryptor(value)
    except ConfigurationError as exc:  # its message names the variable, never the value
        return f"{exc} ({_HOW_TO})"
    return None


def resolve_master_key(store: StoreConfig, env: Mapping[str, str]) -> str | None:
    """The master key to encrypt with: required (and validated) for shared stores; for the
    memory store whatever ``env`` has (None: the library generates an ephemeral one)."""
    problem = master_key_problem(store, env)
    if problem is not None:
        raise ConfigurationError(f"store.kind: {problem}", param="store.kind")
    return env.get(MASTER_KEY_ENV) or None
