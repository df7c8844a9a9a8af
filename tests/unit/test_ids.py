"""Server ids and the server order of events (``services/ids.py``)."""

from __future__ import annotations

import os
import time

import pytest

from onehazel.services.ids import SequenceClock, new_id, random_hex


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


def test_random_hex_is_unique_across_pool_refills() -> None:
    values = [random_hex(12) for _ in range(5000)]  # ~15 refills of the 4 KB pool
    assert all(len(v) == 24 and int(v, 16) >= 0 for v in values)
    assert len(set(values)) == len(values)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    random_hex(8)  # the pool now holds bytes the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        os.close(read)
        os.write(write, " ".join(random_hex(8) for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {random_hex(8) for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
