"""Batched transfer reports from a peer to the scheduler.

Reports carry the piece digests children verify against, so they go out within
``interval_s`` rather than at the end; losing some while the scheduler is down costs
only scoring data, never a pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from peer.backsource import PieceTransfer
from peer.scheduler_client import SchedulerClient, SchedulerRejected, SchedulerUnavailable

log = logging.getLogger(__name__)

# Reports go out at least this often, and at once when this many are pending (p2psim
# batches its simulated peers' reports the same way).
REPORT_INTERVAL_S = 0.2
REPORT_BATCH = 64


class TransferReporter:
    def __init__(
        self,
        client: SchedulerClient,
        peer_id: str,
        interval_s: float = REPORT_INTERVAL_S,
        batch: int = REPORT_BATCH,
    ) -> None:
        self._client = client
        self._peer_id = peer_id
        self._interval_s = interval_s
        self._batch = batch
        self._pending: list[PieceTransfer] = []
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self._warned = False

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run())

    def add(self, transfer: PieceTransfer) -> None:
        self._pending.append(transfer)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            try:
                await self._client.report(self._peer_id, batch)
            except SchedulerUnavailable as exc:
                if not self._warned:
                    log.warning("%s: cannot report transfers: %s", self._peer_id, exc)
                    self._warned = True
                self._pending.clear()
            except SchedulerRejected as exc:
                log.warning("%s: scheduler refused transfer reports: %s", self._peer_id, exc)

    async def close(self) -> None:
        """Send what is pending and stop. The loop is asked to finish, not cancelled:
        cancelling it while a batch is on its way would lose that batch."""
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            await self.flush()
