"""AES-GCM encryption of key material at rest.

The master key comes from the environment (``APIKEYROUTER_MASTER_KEY``, 32 bytes, urlsafe
base64). Without one, an ephemeral key is generated: fine for the in-memory store, whose state
dies with the process anyway; durable stores refuse to start without a configured key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apikeyrouter.utils.bounded_cache import remember
from apikeyrouter.utils.exceptions import ConfigurationError

MASTER_KEY_ENV = "APIKEYROUTER_MASTER_KEY"
_NONCE_BYTES = 12
_VERSION = "v1"
_CIPHERTEXT = re.compile(r"v\d+:[A-Za-z0-9_\-=+/:]+")


def looks_encrypted(material: str) -> bool:
    """``KeyEncryptor`` output is ``v<version>:<urlsafe base64>``; a plaintext provider key
    (``sk-...``, ``AIza...``) never has that shape, so a store can refuse to persist one."""
    return _CIPHERTEXT.fullmatch(material) is not None


def generate_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _decode_master_key(encoded: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(encoded.encode())
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{MASTER_KEY_ENV} is not valid urlsafe base64") from exc
    if len(raw) != 32:
        raise ConfigurationError(f"{MASTER_KEY_ENV} must decode to 32 bytes, got {len(raw)}")
    return raw


#: Bound on cached decoded tokens (one per key in use).
_DECODED_CACHE_LIMIT = 100_000


class KeyEncryptor:
    """Encrypts and decrypts key material; the associated data binds a ciphertext to its key id."""

    __slots__ = ("_aead", "_decoded", "ephemeral")

    def __init__(self, master_key: str | None = None) -> None:
        encoded = master_key if master_key is not None else os.environ.get(MASTER_KEY_ENV)
        self.ephemeral = encoded is None
        raw = _decode_master_key(encoded) if encoded is not None else secrets.token_bytes(32)
        self._aead = AESGCM(raw)
        #: token -> (nonce, sealed bytes): still ciphertext, decoded once instead of per call.
        self._decoded: dict[str, tuple[bytes, bytes]] = {}

    def __repr__(self) -> str:
        return f"KeyEncryptor(ephemeral={self.ephemeral})"

    def encrypt(self, plaintext: str, key_id: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), key_id.encode())
        return f"{_VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def _decode(self, token: str, key_id: str) -> tuple[bytes, bytes]:
        version, _, payload = token.partition(":")
        if version != _VERSION:
            raise ConfigurationError(f"unknown ciphertext version for key {key_id}")
        raw = base64.urlsafe_b64decode(payload.encode())
        decoded = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        return remember(self._decoded, token, decoded, _DECODED_CACHE_LIMIT)

    def decrypt(self, token: str, key_id: str) -> str:
        """The plaintext, for one upstream call. Runs per request: the base64 decoding of the
        token is cached (it is ciphertext either way); the decryption itself is not."""
        try:
            decoded = self._decoded.get(token)
            if decoded is None:
                decoded = self._decode(token, key_id)
            plain = self._aead.decrypt(decoded[0], decoded[1], key_id.encode())
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise ConfigurationError(
                f"cannot decrypt key {key_id}: wrong master key or corrupted record"
            ) from exc
        return plain.decode()
