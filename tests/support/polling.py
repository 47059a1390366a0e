"""Waiting on a condition by polling, so tests never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# How often readiness is polled; short because local servers react in milliseconds.
POLL_INTERVAL_S = 0.02


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError naming ``what`` if never."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """:func:`wait_until` on the event loop, for state only the loop may touch."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)
