"""Master keys and the per-workspace keys derived from them.

A master key is 32 random bytes with an id. Several may be configured (for
rotation); the last one listed is the current key and wraps all new data keys.
Configuration, in order of precedence:

* ``ONEHAZEL_MASTER_KEY``: comma-separated keys, each ``BASE64`` or ``ID:BASE64``;
* ``ONEHAZEL_MASTER_KEY_FILE``: a file with one such key per line;
* the embedded default's key file (``onehazel-data/master.key``), created with
  mode 0600 on first start.

A key given without an id gets ``k`` + the first 8 hex digits of its SHA-256,
so the same key always has the same id. Workspace keys are
HKDF-SHA256(master, info = "onehazel/workspace/v1" | key id | workspace id):
one workspace's key says nothing about another's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class KeyConfigError(ValueError):
    """The master key configuration is missing or malformed (a start-up error)."""


class UnknownKeyId(LookupError):
    """Data was written under a master key id that is not configured."""


@dataclass(frozen=True)
class MasterKey:
    id: str
    secret: bytes

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey(id={self.id!r})"


def parse_master_key(text: str) -> MasterKey:
    text = text.strip()
    kid, _, b64 = text.rpartition(":")
    try:
        secret = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError("a master key must be base64 (optionally ID:BASE64)") from None
    if len(secret) != 32:
        raise KeyConfigError(f"a master key must be 32 bytes, got {len(secret)}")
    if not kid:
        kid = "k" + hashlib.sha256(secret).hexdigest()[:8]
    if not kid.replace("-", "").replace("_", "").isalnum() or len(kid) > 32:
        raise KeyConfigError("a master key id may hold letters, digits, '-' and '_' (max 32)")
    return MasterKey(id=kid, secret=secret)


class KeyRing:
    """The configured master keys; derives (and caches) workspace keys."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise KeyConfigError("no master key configured")
        self._keys = {k.id: k for k in keys}
        if len(self._keys) != len(keys):
            raise KeyConfigError("two master keys share one id")
        self.current = keys[-1]
        self._derive = lru_cache(maxsize=4096)(self._derive_uncached)

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def workspace_key(self, key_id: str, workspace_id: str) -> bytes:
        return self._derive(key_id, workspace_id)

    def _derive_uncached(self, key_id: str, workspace_id: str) -> bytes:
        master = self._keys.get(key_id)
        if master is None:
            raise UnknownKeyId(f"master key {key_id!r} is not configured")
        info = b"onehazel/workspace/v1\x1f" + key_id.encode() + b"\x1f" + workspace_id.encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master.secret)

    def __repr__(self) -> str:
        return f"KeyRing(ids={self.ids!r})"


def generate_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def load_key_ring(*, env: dict[str, str], default_file: Path | None) -> KeyRing:
    """Build the key ring from the environment, or the embedded default's file.

    ``default_file`` is created (mode 0600) when it does not exist; pass None
    when no default may be created (a server on PostgreSQL must be configured).
    """
    if env.get("ONEHAZEL_MASTER_KEY"):
        return KeyRing([parse_master_key(p) for p in env["ONEHAZEL_MASTER_KEY"].split(",") if p.strip()])
    path = Path(env["ONEHAZEL_MASTER_KEY_FILE"]) if env.get("ONEHAZEL_MASTER_KEY_FILE") else default_file
    if path is None:
        raise KeyConfigError(
            "no master key: set ONEHAZEL_MASTER_KEY (base64 of 32 bytes) or ONEHAZEL_MASTER_KEY_FILE"
        )
    if not path.exists():
        if env.get("ONEHAZEL_MASTER_KEY_FILE"):
            raise KeyConfigError(f"master key file {path} does not exist")
        _create_key_file(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise KeyConfigError(f"cannot read master key file {path}: {exc.strerror}") from None
    return KeyRing([parse_master_key(line) for line in lines if line.strip() and not line.startswith("#")])


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_master_key() + "\n")
