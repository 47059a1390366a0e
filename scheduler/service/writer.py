"""The one writer: a single asyncio task owns the ``SchedulerState`` and changes it in order.

Request handlers never touch the state. They ``submit`` an operation, a plain function of
``(state, now, rng)``, and await its result; the writer runs operations one at a time in
arrival order, so no two changes interleave and every decision sees the effect of every
event before it (Kraken's single event loop). Operations are synchronous and short, so
running them on the event loop thread costs less than handing them to another thread.

The writer reads the clock (``time.monotonic``) once per operation and owns the service's
only ``random.Random``; the core never sees either except as arguments.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from scheduler.core import SchedulerState
from scheduler.service.errors import WriterStoppedError

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[SchedulerState, float, random.Random], T]
# Operations waiting for the writer. When full, handlers wait to enqueue: back-pressure on
# the HTTP side instead of an unbounded backlog of work nobody may wait for any more.
DEFAULT_QUEUE_SIZE = 10_000


@dataclass(frozen=True)
class Counts:
    """Sizes of the state after the last operation, for /healthz and the gauges."""

    hosts: int = 0
    peers: int = 0
    tasks: int = 0
    congested_racks: int = 0


class StateWriter:
    def __init__(
        self,
        state: SchedulerState,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self._state = state
        self._rng = rng
        self._clock = clock
        self._queue: asyncio.Queue[tuple[Operation[Any], asyncio.Future[Any]]] = asyncio.Queue(
            queue_size
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.counts = Counts()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler state writer")

    async def stop(self) -> None:
        """Stop after the operation in hand; operations still queued fail."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(WriterStoppedError("the scheduler is shutting down"))

    async def submit(self, operation: Operation[T]) -> T:
        """Run ``operation`` in the writer and return its result (or raise its error)."""
        if self._stopping or self._task is None or self._task.done():
            raise WriterStoppedError("the scheduler is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((operation, future))
        # A put that waited on a full queue may land after stop() drained it; nobody would
        # ever run it.
        if self._stopping:
            raise WriterStoppedError("the scheduler is shutting down")
        return await future

    async def _run(self) -> None:
        while True:
            operation, future = await self._queue.get()
            # The handler went away (client disconnected, request cancelled): nobody will
            # read the answer, and a decision nobody receives would hold upload slots.
            if future.done():
                continue
            try:
                result = operation(self._state, self._clock(), self._rng)
            except Exception as exc:  # the handler maps it onto an HTTP status
                future.set_exception(exc)
            else:
                future.set_result(result)
            state = self._state
            self.counts = Counts(
                len(state.hosts),
                len(state.peers),
                len(state.tasks),
                len(state.rack_flows.congested),
            )
