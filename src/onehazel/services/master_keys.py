"""Master-key rotation: which keys protect data, re-wrapping it under the newest, start-up checks.

Rotation, without downtime (README, "Key rotation"): add the new key last to
the configuration and restart every process (new data is then wrapped under
it, and data under the old key still reads), run
``onehazel keys rotate-master``, remove the old key once it reports the key
unused, restart again.

What carries a master key id: each entity's wrapped data key, each workspace
secret (the fingerprint key) and the sealed payload of each unfinished batch
job. Event and entity ciphertexts are under the entity's data key and never
need rewriting; fingerprints are keyed by the workspace secret, so they keep
matching too.

Rotation walks each table in primary-key order, ``batch_size`` rows per read,
and writes what it re-wrapped in one short transaction per page, each row by
compare-and-set on the value it read: a key erased, a job finished or a value
re-wrapped by a concurrent rotation meanwhile is left as the other writer made
it. It is safe to interrupt and to run again (it skips what is already under
the current key) and to run beside serving processes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onehazel.crypto.blobs import reseal_blob
from onehazel.crypto.fields import DecryptionFailed, rewrap_data_key, rewrap_secret, wrapped_key_id
from onehazel.crypto.keys import KeyConfigError, KeyRing, UnknownKeyId
from onehazel.storage.master_keys import UNKNOWN, MasterKeyRepository
from onehazel.storage.unit_of_work import Store

PAYLOAD_PAGE = 16  # sealed batches of up to thousands of items each
ITEMS = ("entityKeys", "workspaceSecrets", "jobPayloads")
LABELS = {"entityKeys": "entity keys", "workspaceSecrets": "workspace secrets", "jobPayloads": "job payloads"}

# (item kind, rows scanned so far, rows re-wrapped so far, finished?)
Progress = Callable[[str, int, int, bool], None]


class MissingMasterKey(KeyConfigError):
    """Stored data is protected by a master key that is not configured (a start-up error)."""


@dataclass(frozen=True)
class KeyUsage:
    """How many stored items each master key id protects."""

    current: str
    configured: list[str]
    counts: dict[str, Counter[str]]  # item kind -> key id -> count

    def total(self, key_id: str) -> int:
        return sum(c[key_id] for c in self.counts.values())

    @property
    def in_use(self) -> list[str]:
        return sorted({kid for c in self.counts.values() for kid, n in c.items() if n and kid != UNKNOWN})

    @property
    def missing(self) -> list[str]:
        """Key ids protecting data that the configuration does not hold."""
        return [kid for kid in self.in_use if kid not in self.configured]

    @property
    def unused(self) -> list[str]:
        """Configured keys, other than the current one, that protect nothing: safe to remove."""
        return [kid for kid in self.configured if kid != self.current and self.total(kid) == 0]

    def still_in_use(self) -> dict[str, int]:
        """Items per key id other than the current one."""
        return {kid: self.total(kid) for kid in self.in_use if kid != self.current}

    def missing_error(self) -> MissingMasterKey:
        missing = self.missing
        return MissingMasterKey(
            f"stored data is protected by master key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, not configured (configured: {', '.join(self.configured)}); "
            "add it back to ONEHAZEL_MASTER_KEY or the key file, newest key last (see README, Key rotation)"
        )

    def to_wire(self) -> dict[str, Any]:
        ids = self.configured + [kid for kid in self.in_use if kid not in self.configured]
        return {
            "currentKey": self.current,
            "keys": [
                {
                    "keyId": kid,
                    "configured": kid in self.configured,
                    "current": kid == self.current,
                    **{item: self.counts[item][kid] for item in ITEMS},
                }
                for kid in ids
            ],
            "unrecognised": sum(c[UNKNOWN] for c in self.counts.values()),
            "missing": self.missing,
            "unused": self.unused,
        }


@dataclass
class Tally:
    scanned: int = 0
    rewrapped: int = 0
    changed: int = 0  # changed by a concurrent writer between our read and write
    unreadable: int = 0  # under an unconfigured key, or failing to authenticate


@dataclass
class RotationReport:
    current: str
    tallies: dict[str, Tally] = field(default_factory=lambda: {item: Tally() for item in ITEMS})
    after: KeyUsage | None = None

    def to_wire(self) -> dict[str, Any]:
        assert self.after is not None
        return {
            "currentKey": self.current,
            **{
                key: {item: getattr(t, attr) for item, t in self.tallies.items()}
                for key, attr in (
                    ("scanned", "scanned"),
                    ("rewrapped", "rewrapped"),
                    ("changedConcurrently", "changed"),
                    ("unreadable", "unreadable"),
                )
            },
            "unusedKeys": self.after.unused,
            "stillInUse": self.after.still_in_use(),
        }


@dataclass(frozen=True)
class Swap:
    """One stored value to replace: where (primary key), what was read, what to write."""

    where: tuple[Any, ...]
    old: Any
    new: Any


class MasterKeys:
    def __init__(self, store: Store, keys: KeyRing) -> None:
        self.store = store
        self.keys = keys

    async def usage(self) -> KeyUsage:
        """Items per master key id: one scan of the entity keys, the secrets and unfinished jobs."""
        async with self.store.begin() as uow:
            repo = MasterKeyRepository(uow.conn)
            counts = {
                "entityKeys": await repo.entity_key_usage(),
                "workspaceSecrets": await repo.secret_usage(),
                "jobPayloads": await repo.payload_usage(),
            }
        return KeyUsage(current=self.keys.current.id, configured=self.keys.ids, counts=counts)

    async def check(self) -> KeyUsage:
        """The start-up check: MissingMasterKey names every key id in use but not configured."""
        usage = await self.usage()
        if usage.missing:
            raise usage.missing_error()
        return usage

    async def rotate(self, *, batch_size: int = 500, progress: Progress | None = None) -> RotationReport:
        """Re-wrap everything not under the current master key; see the module docstring."""
        if batch_size < 1:
            raise ValueError("the batch size must be at least 1")
        await self.check()
        report = RotationReport(current=self.keys.current.id)
        for item in ITEMS:
            tally = report.tallies[item]
            after: tuple[Any, ...] | None = None
            while True:
                page, after = await self.read_page(item, after, batch_size)
                if not page:
                    break
                tally.scanned += len(page)
                await self.write_page(item, self.rewrap_page(item, page, tally), tally)
                if progress is not None:
                    progress(item, tally.scanned, tally.rewrapped, False)
            if progress is not None:
                progress(item, tally.scanned, tally.rewrapped, True)
        report.after = await self.usage()
        return report

    async def read_page(
        self, item: str, after: tuple[Any, ...] | None, limit: int
    ) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
        """The next ``limit`` rows of ``item`` after ``after``, and the position to continue from."""
        async with self.store.begin() as uow:
            repo = MasterKeyRepository(uow.conn)
            page: list[tuple[Any, ...]]
            if item == "entityKeys":
                page = list(await repo.entity_keys_after(_pair(after), limit))
                return page, (page[-1][:2] if page else after)
            if item == "workspaceSecrets":
                page = list(await repo.secrets_after(_triple(after), limit))
                return page, (page[-1][:3] if page else after)
            # Payloads can be large: a page of jobs is small, and only payloads
            # under an old key are read in full.
            heads = await repo.payloads_after(_pair(after), min(limit, PAYLOAD_PAGE))
            current = self.keys.current.id
            page = [
                (ws, job_id, kid, await repo.payload(ws, job_id) if kid != current else None)
                for ws, job_id, kid in heads
            ]
            return page, (page[-1][:2] if page else after)

    def rewrap_page(self, item: str, page: list[tuple[Any, ...]], tally: Tally) -> list[Swap]:
        """What to write for the rows of ``page`` not under the current key; counts the unreadable."""
        current = self.keys.current.id
        swaps = []
        for row in page:
            try:
                if item == "entityKeys":
                    ws, ext, wrapped = row
                    if wrapped_key_id(wrapped) != current:
                        swaps.append(Swap((ws, ext), wrapped, rewrap_data_key(self.keys, ws, ext, wrapped)))
                elif item == "workspaceSecrets":
                    ws, purpose, version, wrapped = row
                    if wrapped_key_id(wrapped) != current:
                        new = rewrap_secret(self.keys, ws, purpose, version, wrapped)
                        swaps.append(Swap((ws, purpose, version), wrapped, new))
                else:
                    ws, job_id, kid, payload = row
                    if kid != current and payload is not None:
                        sealed = reseal_blob(self.keys, ws, f"job/{job_id}", payload)
                        swaps.append(Swap((ws, job_id), payload, sealed))
            except (DecryptionFailed, UnknownKeyId, IndexError):
                tally.unreadable += 1
        return swaps

    async def write_page(self, item: str, swaps: list[Swap], tally: Tally) -> None:
        """Compare-and-set each swap, all in one transaction."""
        if not swaps:
            return
        async with self.store.begin() as uow:
            repo = MasterKeyRepository(uow.conn)
            for swap in swaps:
                w = swap.where
                if item == "entityKeys":
                    done = await repo.swap_entity_key(w[0], w[1], swap.old, swap.new)
                elif item == "workspaceSecrets":
                    done = await repo.swap_secret(w[0], w[1], w[2], swap.old, swap.new)
                else:
                    done = await repo.swap_payload(w[0], w[1], swap.old, swap.new)
                tally.rewrapped += done
                tally.changed += not done


def _pair(after: tuple[Any, ...] | None) -> tuple[str, str] | None:
    return (str(after[0]), str(after[1])) if after is not None else None


def _triple(after: tuple[Any, ...] | None) -> tuple[str, str, int] | None:
    return (str(after[0]), str(after[1]), int(after[2])) if after is not None else None
