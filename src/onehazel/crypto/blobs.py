"""Sealed blobs: whole documents (accepted batches) encrypted under the workspace key.

A batch may hold PII, so it is stored only as
``b"v1:" + key id + b":" + nonce + AES-GCM(zlib(document))`` with associated
data naming the workspace and the blob (e.g. the job id): a payload cannot be
decrypted in another workspace or attached to another job.
"""

from __future__ import annotations

import os
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onehazel.crypto.fields import DecryptionFailed
from onehazel.crypto.keys import KeyRing


def _aad(workspace_id: str, label: str) -> bytes:
    return b"onehazel/blob/v1\x1f" + workspace_id.encode() + b"\x1f" + label.encode()


def seal_blob(ring: KeyRing, workspace_id: str, label: str, document: bytes) -> bytes:
    kid = ring.current.id
    key = ring.workspace_key(kid, workspace_id)
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, zlib.compress(document, 1), _aad(workspace_id, label))
    return b"v1:" + kid.encode() + b":" + nonce + sealed


def open_blob(ring: KeyRing, workspace_id: str, label: str, blob: bytes) -> bytes:
    try:
        version, kid, rest = blob.split(b":", 2)
    except ValueError:
        raise DecryptionFailed("not a sealed blob") from None
    if version != b"v1" or len(rest) < 28:
        raise DecryptionFailed("unknown sealed blob format")
    key = ring.workspace_key(kid.decode(), workspace_id)
    try:
        compressed = AESGCM(key).decrypt(rest[:12], rest[12:], _aad(workspace_id, label))
    except InvalidTag:
        raise DecryptionFailed("sealed blob does not authenticate") from None
    return zlib.decompress(compressed)


def blob_key_id(blob: bytes) -> str | None:
    """The master key id a sealed blob was made under (its first bytes suffice), or None."""
    parts = blob.split(b":", 2)
    if len(parts) != 3 or parts[0] != b"v1":
        return None
    return parts[1].decode(errors="replace")


def reseal_blob(ring: KeyRing, workspace_id: str, label: str, blob: bytes) -> bytes:
    """The same document sealed under the current master key (rotation)."""
    return seal_blob(ring, workspace_id, label, open_blob(ring, workspace_id, label, blob))
