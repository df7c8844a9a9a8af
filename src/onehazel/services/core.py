"""What every use case needs: the store, the key ring, a clock and short-lived caches."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from onehazel.crypto.fields import DecryptionFailed, FieldCipher, unwrap_data_key, unwrap_secret, wrap_secret
from onehazel.crypto.fingerprints import PURPOSE, SECRET_BYTES, Fingerprinter
from onehazel.crypto.keys import KeyRing, UnknownKeyId
from onehazel.domain.errors import PiiUnreadable, TemplateNotConfigured
from onehazel.domain.templates import Template, get_template
from onehazel.domain.values import now_micros
from onehazel.domain.workspace import Workspace
from onehazel.services.ids import SequenceClock
from onehazel.storage.buckets import BucketStore, MemoryBuckets
from onehazel.storage.records import SettingsRecord
from onehazel.storage.secrets import SecretRepository
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
        self._drops = 0  # a load that began before a drop must not store what it read

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
        drops = self._drops
        try:
            value = await load()
            if self._drops == drops:
                self.put(key, value)
            return value
        finally:
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]

    def put(self, key: str, value: Any) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)

    def drop(self, key: str) -> None:
        """Forget ``key`` (e.g. a revoked API key): the next read loads anew, and a load
        already running (it may have read the row before the change) stores nothing."""
        self._items.pop(key, None)
        self._pending.pop(key, None)
        self._drops += 1

    def clear(self) -> None:
        """Forget everything (e.g. a key revoked), loads already running included (``drop``)."""
        self._items.clear()
        self._pending.clear()
        self._drops += 1


@dataclass
class Core:
    store: Store
    keys: KeyRing
    clock: Callable[[], int] = now_micros
    seq: SequenceClock = field(default_factory=SequenceClock)
    settings_cache: TtlCache = field(default_factory=lambda: TtlCache(CACHE_SECONDS))
    # Workspace fingerprint secrets never change once created: cached for good.
    secret_cache: TtlCache = field(default_factory=lambda: TtlCache(math.inf))
    # Rate-limit token buckets: in this process, or shared (PostgreSQL, Redis); see bootstrap.
    buckets: BucketStore = field(default_factory=MemoryBuckets)
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

    def cipher(self, ws: Workspace, external_id: str, data_key: str | None) -> FieldCipher:
        """The entity's field cipher; a data key or ciphertext that fails to authenticate is a 409.

        A missing key (``None``: its ``entity_keys`` row is gone, e.g. data restored from a
        backup taken before the entity was erased) is a 409 too, never a 500.
        """
        if data_key is None:
            raise PiiUnreadable(
                "this entity's key material was erased, so its PII cannot be read or written; "
                "delete the entity to remove the rest"
            )
        try:
            dek = unwrap_data_key(self.keys, ws.id, external_id, data_key)
        except DecryptionFailed:
            raise PiiUnreadable(_UNREADABLE) from None
        except UnknownKeyId as exc:
            raise PiiUnreadable(f"{exc}; configure it again to read this data") from None
        return _CheckedCipher(dek, workspace_id=ws.id, external_id=external_id)

    async def fingerprinter(self, ws: Workspace) -> Fingerprinter:
        """The workspace's fingerprint key (for eventId / Idempotency-Key replays).

        Created on first use and cached for the life of the process (the secret
        never changes; a master-key rotation only re-wraps its stored copy). Call
        it before opening a transaction: a cache miss reads (and may create) the
        secret in a transaction of its own, which inside another one would wait
        for a second connection that SQLite's single pooled connection never frees.
        """
        fingerprinter: Fingerprinter = await self.secret_cache.get_or_load(
            ws.id, lambda: self._load_fingerprinter(ws.id)
        )
        return fingerprinter

    async def _load_fingerprinter(self, workspace_id: str) -> Fingerprinter:
        async with self.store.begin() as uow:
            repo = SecretRepository(uow.conn)
            wrapped = await repo.get(workspace_id, PURPOSE)
            if not wrapped:
                secret = wrap_secret(self.keys, workspace_id, PURPOSE, 1, os.urandom(SECRET_BYTES))
                # Two processes may both miss: the first insert wins and both read it back.
                await repo.add_if_missing(workspace_id, PURPOSE, 1, secret, now=self.clock())
                wrapped = await repo.get(workspace_id, PURPOSE)
        try:
            secrets = {v: unwrap_secret(self.keys, workspace_id, PURPOSE, v, w) for v, w in wrapped.items()}
        except UnknownKeyId as exc:
            raise UnknownKeyId(f"{exc}; configure it again (see README, Key rotation)") from None
        return Fingerprinter(secrets)
