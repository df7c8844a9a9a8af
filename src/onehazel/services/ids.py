"""Server-assigned identifiers and the server order of events.

Ids are a prefix, 12 hex digits of milliseconds and 16 random hex digits:
unguessable, yet roughly time-ordered so B-tree inserts stay local.
"""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


class SequenceClock:
    """Monotonic server order within a process: microseconds, never repeating.

    Across processes two events may share a value; listings then break the tie
    by eventId, so a sort key is always unique and cursors never skip a row.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last

    def take(self, count: int) -> range:
        """``count`` consecutive values at once, after every value given before (as ``count``
        calls of :meth:`next` would, without reading the clock each time)."""
        first = max(self._last + 1, time.time_ns() // 1000)
        self._last = first + count - 1 if count > 0 else self._last
        return range(first, first + max(count, 0))
