"""The event queue: simulated time and callbacks, ordered by (time, insertion order)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Callback = Callable[[float, Any], None]


class EventQueue:
    """A min-heap of ``(time_s, seq, callback, arg)``; ties run in insertion order.

    The sequence number makes the order total, so a run never depends on comparing
    callbacks or on hash order, and is the same for the same seed in every process.
    """

    __slots__ = ("_heap", "_seq", "now", "stopped", "processed")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callback, Any]] = []
        self._seq = 0
        self.now = 0.0
        self.stopped = False
        self.processed = 0

    def at(self, time_s: float, callback: Callback, arg: Any = None) -> None:
        """Run ``callback(time_s, arg)`` at ``time_s`` (never before the current time)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(time_s, self.now), self._seq, callback, arg))

    def run(self, until_s: float = float("inf")) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and not self.stopped:
            time_s, _, callback, arg = heap[0]
            if time_s > until_s:
                break
            pop(heap)
            self.now = time_s
            self.processed += 1
            callback(time_s, arg)

    def stop(self) -> None:
        self.stopped = True

    def __len__(self) -> int:
        return len(self._heap)
