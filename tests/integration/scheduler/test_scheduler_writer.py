"""The one writer: operations run one at a time, in order; errors reach their submitter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from scheduler.core import SchedulerState, UnknownPeerError
from scheduler.service.errors import WriterStoppedError
from scheduler.service.writer import StateWriter

pytestmark = pytest.mark.timeout(30)


async def test_operations_run_in_submission_order_with_the_writers_clock() -> None:
    ticks = iter(range(1000))
    writer = StateWriter(SchedulerState(), random.Random(1), clock=lambda: float(next(ticks)))
    writer.start()
    seen: list[tuple[int, float]] = []

    def operation(n: int) -> Callable[[SchedulerState, float, random.Random], int]:
        def run(state: SchedulerState, now: float, rng: random.Random) -> int:
            seen.append((n, now))
            return n * 10

        return run

    results = await asyncio.gather(*(writer.submit(operation(n)) for n in range(50)))
    assert results == [n * 10 for n in range(50)]
    assert seen == [(n, float(n)) for n in range(50)]
    await writer.stop()


async def test_an_error_reaches_its_submitter_and_the_writer_carries_on() -> None:
    writer = StateWriter(SchedulerState(), random.Random(1))
    writer.start()
    with pytest.raises(UnknownPeerError):
        await writer.submit(lambda state, now, rng: state.peer("nobody"))
    assert await writer.submit(lambda state, now, rng: len(state.hosts)) == 0
    await writer.stop()


async def test_after_stop_nothing_is_accepted() -> None:
    writer = StateWriter(SchedulerState(), random.Random(1))
    with pytest.raises(WriterStoppedError):
        await writer.submit(lambda state, now, rng: None)
    writer.start()
    await writer.stop()
    with pytest.raises(WriterStoppedError):
        await writer.submit(lambda state, now, rng: None)
