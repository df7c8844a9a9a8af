"""``EntityRepository.all_live``: the batch path's one-number check that a chunk's events
name only stored, not deleted entities of their own workspace (both databases)."""

from __future__ import annotations

import uuid

from onehazel.services.container import Services
from onehazel.storage.records import EntityRecord


def _entity(external_id: str) -> EntityRecord:
    return EntityRecord(
        external_id=external_id,
        type="player",
        attributes={},
        pii={},
        data_key="k",
        version=1,
        created_at=1,
        updated_at=1,
    )


async def test_all_live_is_true_only_when_every_id_names_a_live_entity_of_the_workspace(
    services: Services,
) -> None:
    ws, other = f"ws_{uuid.uuid4().hex[:12]}", f"ws_{uuid.uuid4().hex[:12]}"
    async with services.core.store.begin() as uow:
        for external_id in ("a", "b", "gone", "p'q \u00e9\U0001f600"):
            assert await uow.entities.insert(ws, _entity(external_id))
        assert await uow.entities.insert(other, _entity("theirs"))
        assert await uow.entities.mark_deleted(ws, "gone", now=2, purge_after=3)
    async with services.core.store.begin() as uow:
        live = uow.entities.all_live
        assert await live(ws, set())
        assert await live(ws, {"a"})
        assert await live(ws, {"a", "b", "p'q \u00e9\U0001f600"})
        assert await live(ws, ["a", "a", "b"])  # repeats count once
        assert not await live(ws, {"a", "gone"})  # soft-deleted
        assert not await live(ws, {"a", "missing"})
        assert not await live(ws, {"a", "theirs"})  # another workspace's entity
        assert not await live(ws, {"A"})  # ids are case-sensitive
        assert await live(other, {"theirs"})
