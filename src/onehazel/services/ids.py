"""Server-assigned identifiers and the server order of events.

Ids are a prefix, 12 hex digits of milliseconds and 16 random hex digits:
unguessable, yet roughly time-ordered so B-tree inserts stay local.
"""

from __future__ import annotations

import os
import threading
import time


class _RandomPool:
    """Bytes from ``os.urandom``, read 4 KB at a time and handed out in order.

    Every id of a request (its request id, a server-assigned eventId) used to be a
    ``getrandom`` system call of its own, ~3% of a single event write's CPU here. The
    bytes are the same kind (the kernel's CSPRNG); each is handed out once. Only ids
    come from here: keys and secrets read ``os.urandom``/``secrets`` directly. A forked
    child starts with an empty pool, or parent and child would hand out the same ids.
    """

    SIZE = 4096

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def hex(self, nbytes: int) -> str:
        with self._lock:
            if self._at + nbytes > len(self._buffer):
                self._buffer, self._at = os.urandom(self.SIZE), 0
            chunk = self._buffer[self._at : self._at + nbytes]
            self._at += nbytes
        return chunk.hex()


_pool = _RandomPool()
os.register_at_fork(after_in_child=_pool.reset)


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as hex, for identifiers (not for keys or secrets)."""
    return _pool.hex(nbytes)


def new_id(prefix: str) -> str:
    return f"{prefix}_{int(time.time() * 1000):012x}{random_hex(8)}"


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
