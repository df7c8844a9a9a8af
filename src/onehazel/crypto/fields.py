"""Field encryption with per-entity data keys (AES-256-GCM).

Each entity has its own random 32-byte data key. It is stored only wrapped
(AES-GCM) under the workspace key derived from the current master key, as
``v1.<master key id>.<base64url(nonce|ciphertext)>``. Destroying the wrapped key
at purge time makes every copy of that entity's PII unreadable (crypto-shredding),
which suits append-only events that are never rewritten; rotating a master key
only re-wraps data keys (and the few workspace secrets wrapped the same way).

A PII value is JSON-encoded and sealed under the entity's data key as
``v1.<base64url(nonce|ciphertext)>``. The associated data binds it to workspace,
entity and field path, so a ciphertext copied to another row, entity, workspace
or field fails to decrypt instead of leaking into the wrong place.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onehazel.crypto.keys import KeyRing

_SEP = b"\x1f"


class DecryptionFailed(ValueError):
    """A ciphertext did not authenticate: wrong key, wrong place or tampered."""


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64d(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionFailed("ciphertext is not base64") from None


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(12)
    return _b64e(nonce + AESGCM(key).encrypt(nonce, plaintext, aad))


def _open(key: bytes, token: str, aad: bytes) -> bytes:
    raw = _b64d(token)
    if len(raw) < 12 + 16:
        raise DecryptionFailed("ciphertext is too short")
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], aad)
    except InvalidTag:
        raise DecryptionFailed("ciphertext does not authenticate") from None


def _dek_aad(workspace_id: str, external_id: str) -> bytes:
    return b"onehazel/dek/v1" + _SEP + workspace_id.encode() + _SEP + external_id.encode()


def new_data_key() -> bytes:
    return os.urandom(32)


def wrap_data_key(ring: KeyRing, workspace_id: str, external_id: str, dek: bytes) -> str:
    kid = ring.current.id
    wk = ring.workspace_key(kid, workspace_id)
    return f"v1.{kid}.{_seal(wk, dek, _dek_aad(workspace_id, external_id))}"


def wrapped_key_id(wrapped: str) -> str:
    return wrapped.split(".", 2)[1]


def _unwrap(ring: KeyRing, workspace_id: str, wrapped: str, aad: bytes) -> bytes:
    parts = wrapped.split(".", 2)
    if len(parts) != 3 or parts[0] != "v1":
        raise DecryptionFailed("unknown wrapped key format")
    wk = ring.workspace_key(parts[1], workspace_id)
    return _open(wk, parts[2], aad)


def unwrap_data_key(ring: KeyRing, workspace_id: str, external_id: str, wrapped: str) -> bytes:
    return _unwrap(ring, workspace_id, wrapped, _dek_aad(workspace_id, external_id))


def rewrap_data_key(ring: KeyRing, workspace_id: str, external_id: str, wrapped: str) -> str:
    """The same data key wrapped under the current master key (rotation).

    Raises UnknownKeyId when its master key is not configured, DecryptionFailed
    when it does not authenticate.
    """
    dek = unwrap_data_key(ring, workspace_id, external_id, wrapped)
    return wrap_data_key(ring, workspace_id, external_id, dek)


def _secret_aad(workspace_id: str, purpose: str, version: int) -> bytes:
    return b"onehazel/secret/v1" + _SEP + workspace_id.encode() + _SEP + f"{purpose}/{version}".encode()


def wrap_secret(ring: KeyRing, workspace_id: str, purpose: str, version: int, secret: bytes) -> str:
    """A workspace secret (e.g. the fingerprint key) wrapped like a data key, under the current master key."""
    kid = ring.current.id
    wk = ring.workspace_key(kid, workspace_id)
    return f"v1.{kid}.{_seal(wk, secret, _secret_aad(workspace_id, purpose, version))}"


def unwrap_secret(ring: KeyRing, workspace_id: str, purpose: str, version: int, wrapped: str) -> bytes:
    return _unwrap(ring, workspace_id, wrapped, _secret_aad(workspace_id, purpose, version))


def rewrap_secret(ring: KeyRing, workspace_id: str, purpose: str, version: int, wrapped: str) -> str:
    secret = unwrap_secret(ring, workspace_id, purpose, version, wrapped)
    return wrap_secret(ring, workspace_id, purpose, version, secret)


class FieldCipher:
    """Encrypts and decrypts one entity's PII fields under its data key."""

    def __init__(self, dek: bytes, *, workspace_id: str, external_id: str) -> None:
        self._key = dek
        self._prefix = (
            b"onehazel/field/v1" + _SEP + workspace_id.encode() + _SEP + external_id.encode() + _SEP
        )

    def encrypt(self, path: str, value: Any) -> str:
        plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return "v1." + _seal(self._key, plaintext, self._prefix + path.encode())

    def decrypt(self, path: str, token: str) -> Any:
        if not token.startswith("v1."):
            raise DecryptionFailed("unknown ciphertext format")
        return json.loads(_open(self._key, token[3:], self._prefix + path.encode()))

    def encrypt_fields(self, prefix: str, values: dict[str, Any]) -> dict[str, str]:
        return {name: self.encrypt(f"{prefix}.{name}", v) for name, v in values.items()}

    def decrypt_fields(self, prefix: str, tokens: dict[str, str]) -> dict[str, Any]:
        return {name: self.decrypt(f"{prefix}.{name}", t) for name, t in tokens.items()}

    def __repr__(self) -> str:
        return "FieldCipher(<key hidden>)"
