"""What every use case needs: the store, the key ring, a clock and short-lived caches."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from onehazel.crypto.fields import DecryptionFailed, FieldCipher, unwrap_data_key
from onehazel.crypto.keys import KeyRing, UnknownKeyId
from onehazel.domain.errors import PiiUnreadable, TemplateNotConfigured
from onehazel.domain.templates import Template, get_template
from onehazel.domain.values import now_micros
from onehazel.domain.workspace import Workspace
from onehazel.services.ids import SequenceClock
from onehazel.storage.records import SettingsRecord
from onehazel.storage.unit_of_work import Store

CACHE_SECONDS = 2.0
_UNREADABLE = (
    "this entity's stored PII does not authenticate for this entity (tampered or copied ciphertext); "
    "nothing was returned or changed"
)


class _CheckedCipher(FieldCipher):
    """A FieldCipher whose failures reach clients as 409 pii_unreadable, never as a 500."""

    def decrypt(self, path: str, token: str) -> Any:
        try:
            return super().decrypt(path, token)
        except DecryptionFailed:
            raise PiiUnreadable(_UNREADABLE) from None


class TtlCache:
    """A tiny per-process cache; entries live ``ttl`` seconds (monotonic clock)."""

    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, Any]] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}

    def get(self, key: str) -> Any | None:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, or ``load()``'s, loaded once however many callers miss together.

        Without this every request in flight when an entry expires would query
        the database at the same moment.
        """
        hit = self.get(key)
        if hit is not None:
            return hit
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load))
            self._pending[key] = task
        return await asyncio.shield(task)

    async def _load(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        try:
            value = await load()
            self.put(key, value)
            return value
        finally:
            self._pending.pop(key, None)

    def put(self, key: str, value: Any) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


@dataclass
class Core:
    store: Store
    keys: KeyRing
    clock: Callable[[], int] = now_micros
    seq: SequenceClock = field(default_factory=SequenceClock)
    settings_cache: TtlCache = field(default_factory=lambda: TtlCache(CACHE_SECONDS))
    # Set when this process accepts a job, so its in-process worker starts at once.
    jobs_waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def settings_of(self, ws: Workspace) -> SettingsRecord:
        """The workspace's settings, cached for a couple of seconds per process."""

        async def load() -> SettingsRecord:
            async with self.store.begin() as uow:
                return await uow.workspaces.get_settings(ws.id)

        settings: SettingsRecord = await self.settings_cache.get_or_load(ws.id, load)
        return settings

    async def template_of(self, ws: Workspace) -> Template:
        """The workspace's template; 409 when data arrives before one was chosen."""
        settings = await self.settings_of(ws)
        template = get_template(settings.template_id) if settings.template_id else None
        if template is None:
            raise TemplateNotConfigured(
                "choose a data template first: PUT /operator-data-api/settings "
                'with {"templateId": "tpl_igaming"}'
            )
        return template

    def cipher(self, ws: Workspace, external_id: str, data_key: str) -> FieldCipher:
        """The entity's field cipher; a data key or ciphertext that fails to authenticate is a 409."""
        try:
            dek = unwrap_data_key(self.keys, ws.id, external_id, data_key)
        except DecryptionFailed:
            raise PiiUnreadable(_UNREADABLE) from None
        except UnknownKeyId as exc:
            raise PiiUnreadable(f"{exc}; configure it again to read this data") from None
        return _CheckedCipher(dek, workspace_id=ws.id, external_id=external_id)

    def fingerprint(self, ws: Workspace, source: dict[str, Any], *, key_id: str | None = None) -> str:
        """Keyed hash of a write, as ``<master key id>.<hex>``: no PII can be guessed from it."""
        kid = key_id or self.keys.current.id
        key = self.keys.workspace_key(kid, "fingerprint\x1f" + ws.id)
        # Keyed BLAKE2b is a MAC in its own right, and several times cheaper than
        # HMAC-SHA256 for these small messages (one per ingested event).
        message = orjson.dumps(source, option=orjson.OPT_SORT_KEYS)
        return f"{kid}.{hashlib.blake2b(message, key=key, digest_size=32).hexdigest()}"

    def same_fingerprint(
        self, ws: Workspace, source: dict[str, Any], stored: str, *, computed: str | None = None
    ) -> bool:
        """Does ``stored`` fingerprint ``source``? ``computed`` (under the current key) saves an HMAC."""
        kid = stored.split(".", 1)[0]
        if computed is not None and computed.startswith(kid + "."):
            return hmac.compare_digest(computed, stored)
        return hmac.compare_digest(self.fingerprint(ws, source, key_id=kid), stored)
