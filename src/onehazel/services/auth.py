"""API keys: creation, hashing, authentication and revocation.

A key is ``oh_<mode>_`` + 43 URL-safe characters (256 random bits). Only its
SHA-256 is stored; with that much entropy a slow hash adds nothing, and looking
a key up by the hash of what was sent compares no secret bytes, so response
times reveal nothing about stored keys. Successful look-ups are cached for
``CACHE_SECONDS`` (2 s) per process; a revocation made in this process evicts
the cache at once, one made elsewhere (the CLI) takes effect within those 2 s.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from onehazel.domain.errors import NotFound, Unauthorized
from onehazel.domain.workspace import MODES, Workspace
from onehazel.services.audit import SYSTEM, AuditService
from onehazel.services.core import Core
from onehazel.services.ids import new_id
from onehazel.storage.records import KeyRecord
from onehazel.storage.unit_of_work import UnitOfWork

_KEY_SHAPE = re.compile(r"^oh_(live|test)_[A-Za-z0-9_-]{43}$")


def generate_key(mode: str) -> str:
    return f"oh_{mode}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    return key[:12] + "..."


@dataclass(frozen=True)
class CreatedOperator:
    operator_id: str
    name: str
    live_key: str
    test_key: str


class AuthService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.audit = AuditService(core)

    async def authenticate(self, authorization: str | None) -> Workspace:
        key = _bearer(authorization)
        digest = hash_key(key)

        async def load() -> Workspace:
            async with self.core.store.begin() as uow:
                record = await uow.workspaces.find_key(digest)
            if record is None or record.revoked_at is not None:
                raise Unauthorized("the API key is unknown or revoked")
            return Workspace(
                id=record.workspace_id, operator_id=record.operator_id, mode=record.mode, key_id=record.id
            )

        workspace: Workspace = await self.core.settings_cache.get_or_load("key:" + digest, load)
        return workspace

    async def create_operator(self, name: str, *, actor: str = SYSTEM) -> CreatedOperator:
        name = name.strip()
        if not name or len(name) > 200:
            raise ValueError("an operator name must be 1-200 characters")
        operator_id = new_id("op")
        now = self.core.clock()
        keys: dict[str, str] = {}
        async with self.core.store.begin() as uow:
            await uow.workspaces.add_operator(operator_id, name, now=now)
            for mode in MODES:
                workspace_id = new_id("ws")
                await uow.workspaces.add_workspace(workspace_id, operator_id, mode=mode, now=now)
                keys[mode] = await self._add_key(uow, workspace_id, mode, now, actor=actor)
        return CreatedOperator(operator_id, name, keys["live"], keys["test"])

    async def create_key(self, operator_id: str, mode: str, *, actor: str = SYSTEM) -> tuple[str, str]:
        """A further key for an operator's workspace; returns (key id, key)."""
        if mode not in MODES:
            raise ValueError("mode must be live or test")
        now = self.core.clock()
        async with self.core.store.begin() as uow:
            workspace_id = await uow.workspaces.workspace_of(operator_id, mode)
            if workspace_id is None:
                raise NotFound(f"no operator {operator_id!r}")
            key = await self._add_key(uow, workspace_id, mode, now, actor=actor)
            found = await uow.workspaces.find_key(hash_key(key))
        assert found is not None
        return found.id, key

    async def list_keys(self, operator_id: str | None = None) -> list[KeyRecord]:
        async with self.core.store.begin() as uow:
            return await uow.workspaces.list_keys(operator_id)

    async def revoke_key(self, key_id: str, *, actor: str = SYSTEM) -> None:
        """Revoke a key (revoking twice keeps the first time, and audits it once)."""
        async with self.core.store.begin() as uow:
            found = await uow.workspaces.get_key(key_id)
            if found is None or not await uow.workspaces.revoke_key(key_id, now=self.core.clock()):
                raise NotFound(f"no key {key_id!r}")
            if found.revoked_at is None:
                await self.audit.record_in(
                    uow,
                    workspace_id=found.workspace_id,
                    action="key.revoke",
                    target=key_id,
                    actor=actor,
                    details={"mode": found.mode},
                )
        self.core.settings_cache.clear()

    async def workspace(
        self,
        *,
        workspace_id: str | None = None,
        operator_id: str | None = None,
        mode: str = "live",
        actor: str,
    ) -> Workspace:
        """A workspace named by id, or by operator and mode, acting as ``actor`` (the CLI).

        ``actor`` takes the place of the API key id, so the audit log names who acted.
        """
        async with self.core.store.begin() as uow:
            if workspace_id is not None:
                found = await uow.workspaces.get_workspace(workspace_id)
                if found is None:
                    raise NotFound(f"no workspace {workspace_id!r} (onehazel keys list --json shows them)")
                operator_id, mode = found
            else:
                if mode not in MODES:
                    raise ValueError("mode must be live or test")
                workspace_id = await uow.workspaces.workspace_of(operator_id or "", mode)
                if workspace_id is None:
                    raise NotFound(f"no operator {operator_id!r} (onehazel keys list --json shows them)")
        assert operator_id is not None
        return Workspace(id=workspace_id, operator_id=operator_id, mode=mode, key_id=actor)

    async def count_operators(self) -> int:
        async with self.core.store.begin() as uow:
            return await uow.workspaces.count_operators()

    async def _add_key(self, uow: UnitOfWork, workspace_id: str, mode: str, now: int, *, actor: str) -> str:
        key, key_id = generate_key(mode), new_id("key")
        await uow.workspaces.add_key(
            key_id, workspace_id, key_hash=hash_key(key), hint=key_hint(key), now=now
        )
        await self.audit.record_in(
            uow,
            workspace_id=workspace_id,
            action="key.create",
            target=key_id,
            actor=actor,
            details={"mode": mode},
        )
        return key


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("send the API key as 'Authorization: Bearer oh_live_...'")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not _KEY_SHAPE.match(key):
        raise Unauthorized("the Authorization header must be 'Bearer oh_live_...' or 'Bearer oh_test_...'")
    return key
