"""Fingerprints of writes (eventId and Idempotency-Key replays), keyed by a workspace secret.

A fingerprint is ``s<version>.<hex>``: keyed BLAKE2b (a MAC in its own right,
several times cheaper than HMAC-SHA256 for these small messages) of the
canonical JSON of what the client sent, under the workspace's random
fingerprint secret of that version. The secret, not the master key, is the
key: rotating the master key re-wraps the stored secret (one row per
workspace) and every stored fingerprint keeps matching, whichever master keys
are configured afterwards. No PII can be guessed from a fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

PURPOSE = "fingerprint"
SECRET_BYTES = 32


class Fingerprinter:
    """One workspace's fingerprint secrets (by version); new fingerprints use the newest."""

    def __init__(self, secrets: dict[int, bytes]) -> None:
        if not secrets:
            raise ValueError("a fingerprinter needs at least one secret")
        # Keyed BLAKE2b states, copied per message: the key block is hashed once, not per call.
        self._keyed = {v: hashlib.blake2b(key=secret, digest_size=32) for v, secret in secrets.items()}
        self.version = max(secrets)
        self._prefix = f"s{self.version}."
        self._current = self._keyed[self.version]

    def of(self, source: dict[str, Any]) -> str:
        return self._prefix + _digest(self._current, source)

    def same(self, source: dict[str, Any], stored: str, *, computed: str | None = None) -> bool:
        """Does ``stored`` fingerprint ``source``? ``computed`` (from :meth:`of`) saves a hash."""
        if computed is not None and computed.startswith(self._prefix) and stored.startswith(self._prefix):
            return hmac.compare_digest(computed, stored)
        label, _, _ = stored.partition(".")
        try:
            keyed = self._keyed.get(int(label[1:])) if label.startswith("s") else None
        except ValueError:
            keyed = None
        if keyed is None:
            return False  # not made by any secret of this workspace
        return hmac.compare_digest(f"{label}.{_digest(keyed, source)}", stored)

    def __repr__(self) -> str:
        return f"Fingerprinter(version={self.version}, <secrets hidden>)"


def _digest(keyed: Any, source: dict[str, Any]) -> str:
    """Hex BLAKE2b, keyed by ``keyed``'s secret, of ``source``'s canonical JSON."""
    state = keyed.copy()
    state.update(orjson.dumps(source, option=orjson.OPT_SORT_KEYS))
    return str(state.hexdigest())
