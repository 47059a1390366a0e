"""The event queue: simulated time and callbacks, ordered by (time, insertion order)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Callback = Callable[[float, Any], None]
# ``on_tick`` runs after this many events: often enough for a progress bar to move a few
# times a second, rare enough to cost nothing measurable.
TICK_EVENTS = 16384


class EventQueue:
    """A min-heap of ``(time_s, seq, callback, arg)``; ties run in insertion order.

    The sequence number makes the order total, so a run never depends on comparing
    callbacks or on hash order, and is the same for the same seed in every process.
    """

    __slots__ = ("_heap", "_seq", "now", "stopped", "processed", "on_tick")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callback, Any]] = []
        self._seq = 0
        self.now = 0.0
        self.stopped = False
        self.processed = 0
        # Called every TICK_EVENTS events (progress reporting); never changes the run.
        self.on_tick: Callable[[], None] | None = None

    def at(self, time_s: float, callback: Callback, arg: Any = None) -> None:
        """Run ``callback(time_s, arg)`` at ``time_s`` (never before the current time)."""
        self._seq += 1
        now = self.now
        heapq.heappush(self._heap, (time_s if time_s > now else now, self._seq, callback, arg))

    def run(self, until_s: float = float("inf")) -> None:
        heap = self._heap
        pop = heapq.heappop
        processed = self.processed
        next_tick = processed + TICK_EVENTS
        try:
            while heap and not self.stopped:
                entry = pop(heap)
                time_s = entry[0]
                if time_s > until_s:
                    heapq.heappush(heap, entry)
                    break
                self.now = time_s
                processed += 1
                entry[2](time_s, entry[3])
                if processed >= next_tick:
                    next_tick = processed + TICK_EVENTS
                    if self.on_tick is not None:
                        self.processed = processed
                        self.on_tick()
        finally:
            self.processed = processed

    def stop(self) -> None:
        self.stopped = True

    def __len__(self) -> int:
        return len(self._heap)
