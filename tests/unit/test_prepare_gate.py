"""The batch worker's look-ahead check pauses between slices while its gate is closed.

The worker checks the next chunk on the event loop while the database writes the current
one, and closes the gate from the end of the bulk write to the COMMIT so that the chunk's
short statements are not each held up by a slice of checking. Closed, the check must not
advance past the slice it is in; reopened, it must finish with exactly what the
ungated check gives.
"""

from __future__ import annotations

import asyncio
from typing import Any

from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.templates import TPL_IGAMING
from onehazel.jobs.apply import PREPARE_SLICE, PreparedEvents, prepare_events, prepare_events_async

FINGERPRINTS = Fingerprinter({1: b"g" * 32})


def items(count: int) -> list[dict[str, Any]]:
    return [
        {
            "externalId": f"p-{i % 7}",
            "eventId": f"e-{i}",
            "type": "transaction",
            "timestamp": "2026-11-27T10:00:00Z",
            "data": {"type": "deposit", "amount": f"{i}.50", "currency": "EUR"},
        }
        for i in range(count)
    ]


def summary(prepared: PreparedEvents) -> Any:
    rows = prepared.rows
    assert rows is not None
    return [(c.offset, c.event_id, c.fingerprint, c.data) for c in prepared.checked], rows.columns()


async def test_a_closed_gate_holds_the_check_and_an_open_one_lets_it_finish() -> None:
    batch = items(PREPARE_SLICE * 10)
    gate = asyncio.Event()  # closed
    task = asyncio.ensure_future(prepare_events_async(TPL_IGAMING, batch, 0, FINGERPRINTS, gate=gate))
    for _ in range(PREPARE_SLICE * 20):  # far more turns of the loop than an ungated check needs
        await asyncio.sleep(0)
    assert not task.done()

    gate.set()
    for _ in range(3):  # closed again mid-way: it stops again ...
        await asyncio.sleep(0)
    gate.clear()
    for _ in range(PREPARE_SLICE * 20):
        await asyncio.sleep(0)
    assert not task.done()

    gate.set()  # ... and finishes once open, with what the plain check gives
    prepared = await asyncio.wait_for(task, timeout=10)
    assert summary(prepared) == summary(prepare_events(TPL_IGAMING, batch, 0, FINGERPRINTS))


async def test_without_a_gate_the_check_runs_through() -> None:
    batch = items(PREPARE_SLICE * 3)
    prepared = await asyncio.wait_for(prepare_events_async(TPL_IGAMING, batch, 0, FINGERPRINTS), timeout=10)
    assert len(prepared.checked) == len(batch)
