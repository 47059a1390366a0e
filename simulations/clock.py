"""The event queue: simulated time and callbacks, ordered by (time, insertion order)."""

from __future__ import annotations

import collections
import heapq
from collections.abc import Callable
from typing import Any

Callback = Callable[[float, Any], None]
Entry = tuple[float, int, Callback, Any]
# ``on_tick`` runs after this many events: often enough for a progress bar to move a few
# times a second, rare enough to cost nothing measurable.
TICK_EVENTS = 16384


class EventQueue:
    """A min-heap of ``(time_s, seq, callback, arg)``; ties run in insertion order.

    The sequence number makes the order total, so a run never depends on comparing
    callbacks or on hash order, and is the same for the same seed in every process.

    Events queued through ``at_fifo`` wait in a plain FIFO line instead of the heap, as
    long as each comes no earlier than the one before it: true of events queued a fixed
    delay after the current time, like every piece request of the simulator (half of all
    events). The line is in (time, seq) order by construction, so taking whichever of the
    line's head and the heap's top is smaller gives exactly the heap's order, while those
    events skip the heap's O(log n) push and pop and keep the heap small.
    """

    __slots__ = ("_heap", "_fifo", "_seq", "now", "stopped", "processed", "on_tick")

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._fifo: collections.deque[Entry] = collections.deque()
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

    def at_fifo(self, time_s: float, callback: Callback, arg: Any = None) -> None:
        """``at``, for events that mostly come in time order (see the class comment); one
        that would come before the last in line goes to the heap, so order never breaks."""
        self._seq += 1
        now = self.now
        entry = (time_s if time_s > now else now, self._seq, callback, arg)
        fifo = self._fifo
        if not fifo or fifo[-1][0] <= entry[0]:
            fifo.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def run(self, until_s: float = float("inf")) -> None:
        heap = self._heap
        fifo = self._fifo
        pop = heapq.heappop
        popleft = fifo.popleft
        processed = self.processed
        next_tick = processed + TICK_EVENTS
        try:
            while not self.stopped:
                # The smaller of the line's head and the heap's top; equal times fall to
                # the sequence numbers, as in one heap.
                if fifo and not (heap and heap[0] < fifo[0]):
                    entry = popleft()
                    time_s, _, callback, arg = entry
                    if time_s > until_s:
                        fifo.appendleft(entry)
                        break
                elif heap:
                    entry = pop(heap)
                    time_s, _, callback, arg = entry
                    if time_s > until_s:
                        heapq.heappush(heap, entry)
                        break
                else:
                    break
                self.now = time_s
                processed += 1
                callback(time_s, arg)
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
        return len(self._heap) + len(self._fifo)
