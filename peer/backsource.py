"""Back-to-source: bringing a blob's missing pieces from the upstream registry.

Workers take *spans* of contiguous missing pieces, lowest first, and fetch each span
with one ``Range`` request; every piece is recorded as soon as its bytes are in the
file, while the request keeps receiving. Fewer, longer requests cost the registry and
us far less than one request per piece. A failed request puts its unfinished pieces
back in the queue; a piece that fails ``attempts`` times fails the task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from peer.origin import OriginFetcher, PieceFetchError
from peer.piece_hasher import SpanHasher
from peer.task import BlobTask, TaskFailed
from registry_proxy.ranges import ByteRange

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (0.2, 1.0, 3.0)
# The longest byte range one request to the registry asks for.
SPAN_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class PieceTransfer:
    """One piece that arrived, as reported to the scheduler."""

    index: int
    parent_id: str | None  # None: the origin
    size_bytes: int
    cost_s: float
    ok: bool
    digest: str | None = None


class OriginSupplier:
    name = "the registry"

    def __init__(
        self,
        fetcher: OriginFetcher,
        concurrency: int,
        attempts: int,
        on_bytes: Callable[[int], None] = lambda n: None,
        on_piece: Callable[[PieceTransfer], None] = lambda t: None,
    ) -> None:
        self._fetcher = fetcher
        self._concurrency = concurrency
        self._attempts = attempts
        self._on_bytes = on_bytes
        self._on_piece = on_piece
        self._failures: collections.Counter[int] = collections.Counter()

    async def supply(self, task: BlobTask) -> None:
        await self.fetch(task, task.missing_pieces())

    async def fetch(self, task: BlobTask, pieces: list[int]) -> None:
        """Fetch those of ``pieces`` the task lacks, lowest first (a share of the origin
        fetch, ``scheduler.core.origin_shares``, comes a few pieces at a time)."""
        queue = sorted((i for i in pieces if not task.has_piece(i)), reverse=True)
        whole = task.layout.count == 1
        workers = [
            asyncio.create_task(self._worker(task, queue, whole))
            for _ in range(min(self._concurrency, max(1, len(queue))))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def finish(self, task: BlobTask) -> None:
        """Nobody to tell: the registry does not care."""

    def _take_span(self, task: BlobTask, queue: list[int]) -> list[int]:
        limit = max(
            1,
            min(SPAN_MAX_BYTES // task.layout.piece_bytes, -(-len(queue) // self._concurrency)),
        )
        span = [queue.pop()]  # pop() yields the lowest index first
        while queue and len(span) < limit and queue[-1] == span[-1] + 1:
            span.append(queue.pop())
        return span

    async def _worker(self, task: BlobTask, queue: list[int], whole: bool) -> None:
        while queue and task.running:
            span = self._take_span(task, queue)
            await self._fetch_span(task, span, queue, whole)

    async def _fetch_span(
        self, task: BlobTask, span: list[int], queue: list[int], whole: bool
    ) -> None:
        layout = task.layout
        pending = collections.deque(span)
        recording: list[asyncio.Task[None]] = []
        written_until = layout.start(span[0])
        piece_started = time.monotonic()

        async def on_written(end: int) -> None:
            nonlocal written_until, piece_started
            self._on_bytes(end - written_until)
            written_until = end
            while pending and layout.stop(pending[0]) <= end:
                index = pending.popleft()
                now = time.monotonic()
                # Record the piece (its digest was computed on the way in) while the request
                # keeps receiving.
                recording.append(
                    asyncio.create_task(
                        self._record(
                            task,
                            index,
                            now - piece_started,
                            hasher.digests.pop(index),
                            hasher.kept.pop(index, None),
                        )
                    )
                )
                piece_started = now

        byte_range = ByteRange(layout.start(span[0]), layout.stop(span[-1]))
        hasher = SpanHasher(layout, span[0], keep=task.keeps_in_memory)
        try:
            await self._fetcher.fetch_range(task.fd, byte_range, whole, on_written, hasher)
        except PieceFetchError as exc:
            failed = pending[0]
            self._failures[failed] += 1
            attempt = self._failures[failed]
            log.warning(
                "%s: piece %d attempt %d/%d failed: %s",
                task.digest,
                failed,
                attempt,
                self._attempts,
                exc,
            )
            if attempt >= self._attempts:
                raise TaskFailed(f"piece {failed} failed {attempt} times: {exc}") from exc
            queue.extend(reversed(pending))  # retried first, lowest index first
            pending.clear()
            await asyncio.sleep(RETRY_BACKOFF_S[min(attempt - 1, len(RETRY_BACKOFF_S) - 1)])
        finally:
            await asyncio.gather(*recording)

    async def _record(
        self,
        task: BlobTask,
        index: int,
        cost_s: float,
        digest: str,
        data: list[memoryview] | None,
    ) -> None:
        await task.record_piece(index, digest=digest, data=data)
        self._on_piece(PieceTransfer(index, None, task.layout.size(index), cost_s, True, digest))
