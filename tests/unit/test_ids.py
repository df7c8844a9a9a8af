"""Server ids and the server order of events (``services/ids.py``)."""

from __future__ import annotations

import time

from onehazel.services.ids import SequenceClock, new_id


def test_sequence_values_only_grow_whether_taken_one_by_one_or_in_blocks() -> None:
    clock = SequenceClock()
    seen = [clock.next()]
    for count in (1, 5000, 0, 3, 1):
        block = list(clock.take(count))
        assert len(block) == count
        seen += block
        seen.append(clock.next())
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


def test_a_block_starts_at_the_clock_when_the_clock_is_ahead() -> None:
    clock = SequenceClock()
    before = time.time_ns() // 1000
    block = clock.take(3)
    assert before <= block.start <= time.time_ns() // 1000  # wall-clock microseconds, not a count


def test_new_ids_carry_their_prefix_and_differ() -> None:
    ids = {new_id("evt") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("evt_") and len(i) == 4 + 12 + 16 for i in ids)
