"""One blob download: pieces brought into the task file by a supplier, verified in order.

A task owns its file descriptor, its piece records and the *verifier*; a
:class:`PieceSupplier` (the registry, or the swarm of other peers) brings the missing
pieces and records each one with :meth:`BlobTask.record_piece`, which hashes it on a
worker thread and, when a trusted digest is known, checks it. The verifier feeds
recorded pieces in index order into the blob's running sha256. Clients are sent the
contiguous prefix of recorded pieces, and the last byte only once the blob digest
matched, so no client ever receives a complete body with wrong content. A blob that
matched but cannot be kept (the disk filled up under it) still reaches the clients
already reading it, whole and verified; it is not cached, and its file is deleted so
the space comes back. Hashing is the CPU cost that bounds a cold download (two sha256
passes over every byte), which is why piece hashing and the in-order pass run in
parallel, and why pieces the in-order pass will reach soon are handed to it in memory
(``keeps_in_memory``) rather than read back from the file: a second read of every byte
costs a copy and a cold-cache hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

from peer.pieces import PieceLayout, PieceSet
from peer.storage import BlobMeta, BlobStore, StorageError, TaskProgress

log = logging.getLogger(__name__)

HASH_READ_BYTES = 4 * 1024 * 1024
# How far ahead of the in-order sha256 recorded pieces stay in memory for it. Bounds the
# memory a download holds beyond its buffers; pieces past it are read back from the file.
RESIDENT_WINDOW_BYTES = 32 * 1024 * 1024
PROGRESS_SAVE_INTERVAL_S = 0.5


class TaskState(enum.Enum):
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


class TaskFailed(Exception):
    """The download failed; nothing of it is served as complete."""


class DigestMismatch(TaskFailed):
    pass


class StoreFailed(TaskFailed):
    """The blob is verified, but the disk could not take what keeping it needs."""


class PieceCorrupt(Exception):
    """A piece's bytes do not match the digest they were promised to have."""


class PieceSupplier(Protocol):
    """Brings missing pieces into a task: the registry, or other peers."""

    name: str

    async def supply(self, task: BlobTask) -> None:
        """Record every missing piece, or raise :class:`TaskFailed`."""

    async def finish(self, task: BlobTask) -> None:
        """The task ended (complete or failed): tell whoever needs to know."""


class BlobTask:
    def __init__(
        self,
        digest: str,
        layout: PieceLayout,
        store: BlobStore,
        supplier: PieceSupplier,
    ) -> None:
        self.digest = digest
        self.layout = layout
        self.store = store
        self.state = TaskState.RUNNING
        self.error: TaskFailed | None = None
        self.started_at = time.monotonic()
        self.last_progress_at = self.started_at  # when a piece was last recorded
        self._supplier = supplier
        self._progress = asyncio.Condition()
        self._fd = -1
        self._pieces = PieceSet(layout.count)  # written and their digest recorded
        self._digests: list[str | None] = [None] * layout.count
        self._hashed_pieces = 0  # fed into the blob's sha256, in order
        # Bytes of recorded pieces not yet fed, kept for that pass (see keeps_in_memory).
        self._resident: dict[int, list[memoryview]] = {}
        self._window_pieces = max(1, RESIDENT_WINDOW_BYTES // layout.piece_bytes)
        # Bytes fed into the blob's sha256, by where they were read from.
        self.verified_bytes = {"memory": 0, "file": 0}
        self._runner: asyncio.Task[None] | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._last_save = 0.0
        self._saved_prefix = -1  # the contiguous prefix the progress file holds
        self._trailing_save: asyncio.TimerHandle | None = None

    # Public view -------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return self.layout.total_bytes

    @property
    def servable_bytes(self) -> int:
        """How many leading bytes a client may be sent now."""
        if self.whole:
            return self.size_bytes
        recorded = min(self.size_bytes, self._pieces.prefix * self.layout.piece_bytes)
        return max(0, min(recorded, self.size_bytes - 1))  # the last byte waits for the digest

    @property
    def whole(self) -> bool:
        """Every byte may go to clients: the task ended with the blob matching its digest,
        complete, or failed only because the disk could not keep it."""
        return self.state is TaskState.COMPLETE or isinstance(self.error, StoreFailed)

    @property
    def fd(self) -> int:
        return self._fd

    def start(self, on_done: Callable[[BlobTask], Awaitable[None]]) -> None:
        """Open the task file (raises StorageError) and start downloading."""
        self._fd, recorded = self.store.open_task(
            self.digest, self.size_bytes, self.layout.piece_bytes
        )
        self._runner = asyncio.create_task(self._run(on_done, recorded), name=f"task {self.digest}")

    async def wait_beyond(self, offset: int, timeout_s: float) -> bool:
        """Wait until more than ``offset`` bytes are servable or the task ended.

        Returns False on timeout.
        """
        return await self._wait_until(
            lambda: self.servable_bytes > offset or self.state is not TaskState.RUNNING,
            timeout_s,
        )

    async def wait_for_change(
        self, known: int, timeout_s: float, stop: Callable[[], bool] = lambda: False
    ) -> None:
        """Wait until the task holds other than ``known`` pieces, has ended, or ``stop()``
        is true, at most ``timeout_s``: a child long-polling this peer's piece list."""
        await self._wait_until(
            lambda: len(self._pieces) != known or self.state is not TaskState.RUNNING or stop(),
            timeout_s,
        )

    async def wake(self) -> None:
        """Make everyone waiting on this task look at their condition again."""
        async with self._progress:
            self._progress.notify_all()

    async def _wait_until(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``ready()``, checked at every change of the task; False on timeout."""
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(ready), timeout_s)
            except TimeoutError:
                return False
        return True

    async def cancel(self) -> None:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    # Work --------------------------------------------------------------------------

    async def _run(
        self, on_done: Callable[[BlobTask], Awaitable[None]], recorded: list[str]
    ) -> None:
        if recorded:
            kept = await asyncio.to_thread(self._recheck, recorded)
            for index in range(kept):
                self._digests[index] = recorded[index]
                self._pieces.add(index)
            log.info(
                "%s: resuming with %d of %d pieces (%d recorded)",
                self.digest,
                kept,
                self.layout.count,
                len(recorded),
            )
        fetching = asyncio.create_task(self._fetch_all())
        fetching.add_done_callback(lambda _: asyncio.create_task(self.wake()))
        self._fetching = fetching
        try:
            await self._verify_all()
            await fetching
            await self._finish()
        except TaskFailed as exc:
            await self._fail(exc)
        except asyncio.CancelledError:
            await self._fail(TaskFailed("download cancelled"))
            raise
        except Exception as exc:  # A bug must not leave clients waiting forever.
            log.exception("%s: download crashed", self.digest)
            await self._fail(TaskFailed(f"internal error: {exc!r}"))
        finally:
            if not fetching.done():
                fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)
            await on_done(self)

    async def _fetch_all(self) -> None:
        await self._supplier.supply(self)
        if not self._pieces.complete:
            raise TaskFailed(f"{self._supplier.name} stopped with pieces missing")

    # For suppliers -----------------------------------------------------------------

    @property
    def supplier(self) -> PieceSupplier:
        return self._supplier

    @property
    def running(self) -> bool:
        return self.state is TaskState.RUNNING

    def missing_pieces(self) -> list[int]:
        return self._pieces.missing()

    def has_piece(self, index: int) -> bool:
        return index in self._pieces

    def piece_digest(self, index: int) -> str | None:
        return self._digests[index] if index in self._pieces else None

    def present_pieces(self) -> list[int]:
        return self._pieces.present()

    def keeps_in_memory(self, index: int) -> bool:
        """Whether piece ``index``, once recorded, should stay in memory for the in-order
        sha256: it will be reached soon. Asked from any thread as a piece starts."""
        return 0 <= index - self._hashed_pieces < self._window_pieces

    async def record_piece(
        self,
        index: int,
        expected: str | None = None,
        digest: str | None = None,
        data: list[memoryview] | None = None,
    ) -> str:
        """Mark a piece now in the file present; returns its digest.

        ``digest`` is the piece's sha256 if the supplier computed it on the way in;
        otherwise the piece is read back and hashed on a worker thread. With
        ``expected`` (a trusted digest), a mismatch raises :class:`PieceCorrupt` and
        the piece stays missing: its bytes never reach a client. ``data`` is the
        piece's bytes as written, if the supplier kept them (``keeps_in_memory``):
        the in-order sha256 then uses them instead of reading the file. Only accepted
        pieces are kept, so a corrupt copy never reaches that pass.
        """
        if digest is None:
            digest = await asyncio.to_thread(self._piece_digest, index)
        if expected is not None and digest != expected:
            raise PieceCorrupt(f"piece {index} has digest {digest}, expected {expected}")
        if data is not None and index not in self._pieces and self.keeps_in_memory(index):
            self._resident[index] = data
        self._digests[index] = digest
        self._pieces.add(index)
        self.last_progress_at = time.monotonic()
        await self.wake()
        self._save_progress(force=False)
        return digest

    async def _verify_all(self) -> None:
        """Feed pieces into the blob's sha256 in order; compare the digest at the end."""
        blob_hash = hashlib.sha256()
        while self._hashed_pieces < self.layout.count:
            async with self._progress:
                await self._progress.wait_for(
                    lambda: self._hashed_pieces in self._pieces or self._fetch_ended()
                )
            if self._hashed_pieces not in self._pieces:
                self._raise_fetch_error()
            ready = self._pieces.prefix
            first = self._hashed_pieces
            kept = [self._resident.pop(index, None) for index in range(first, ready)]
            await asyncio.to_thread(self._feed, blob_hash, first, kept)
            self._hashed_pieces = ready
        actual = f"sha256:{blob_hash.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatch(f"content has digest {actual}, expected {self.digest}")

    def _recheck(self, recorded: list[str]) -> int:
        """How many leading recorded pieces still match their digests on disk."""
        for index, expected in enumerate(recorded[: self.layout.count]):
            if self._piece_digest(index) != expected:
                log.warning("%s: piece %d changed on disk; fetching it again", self.digest, index)
                return index
        return min(len(recorded), self.layout.count)

    def _fetch_ended(self) -> bool:
        return self._fetching is not None and self._fetching.done()

    def _raise_fetch_error(self) -> None:
        assert self._fetching is not None
        error = self._fetching.exception()
        if isinstance(error, TaskFailed):
            raise error
        raise TaskFailed(f"download stopped before piece {self._hashed_pieces}: {error!r}")

    def _read_piece(self, index: int) -> Iterator[bytes]:
        offset, end = self.layout.start(index), self.layout.stop(index)
        while offset < end:
            data = os.pread(self._fd, min(HASH_READ_BYTES, end - offset), offset)
            if not data:
                raise TaskFailed(f"task file is shorter than expected at {offset}")
            yield data
            offset += len(data)

    def _piece_digest(self, index: int) -> str:
        piece_hash = hashlib.sha256()
        for data in self._read_piece(index):
            piece_hash.update(data)
        return f"sha256:{piece_hash.hexdigest()}"

    def _feed(
        self, blob_hash: hashlib._Hash, first: int, kept: list[list[memoryview] | None]
    ) -> None:
        """Hash pieces ``first`` onwards, one per entry of ``kept``: their bytes in
        memory, or None to read them from the file."""
        for index, views in enumerate(kept, first):
            if views is None:
                for data in self._read_piece(index):
                    blob_hash.update(data)
                self.verified_bytes["file"] += self.layout.size(index)
                continue
            for view in views:
                blob_hash.update(view)
            self.verified_bytes["memory"] += self.layout.size(index)

    async def _finish(self) -> None:
        self._cancel_trailing_save()
        self._resident.clear()
        digests = [d for d in self._digests if d is not None]
        meta = BlobMeta(self.digest, self.size_bytes, self.layout.piece_bytes, digests)
        try:
            await asyncio.to_thread(self.store.commit, meta)
        except StorageError as exc:
            raise StoreFailed(f"verified, but cannot be kept: {exc}") from exc
        async with self._progress:
            self.state = TaskState.COMPLETE
            self._progress.notify_all()
        log.info(
            "%s: complete, %d bytes in %.2fs (%.0f%% verified from memory, the rest read back)",
            self.digest,
            self.size_bytes,
            time.monotonic() - self.started_at,
            100 * self.verified_bytes["memory"] / max(1, self.size_bytes),
        )

    async def _fail(self, error: TaskFailed) -> None:
        self._cancel_trailing_save()
        self._resident.clear()
        async with self._progress:
            self.state = TaskState.FAILED
            self.error = error
            self._progress.notify_all()
        # Pieces of a blob that failed its digest are worthless, and a blob the disk
        # cannot take only holds space a full disk needs; others are kept so a later
        # request (or a restarted daemon) resumes instead of starting over. Readers hold
        # their own descriptors, so a deleted file still serves them.
        if isinstance(error, DigestMismatch | StoreFailed) or self._pieces.prefix == 0:
            self.store.discard_task(self.digest)
        else:
            self._save_progress(force=True)
        log.warning("%s: download failed: %s", self.digest, error)

    def _save_progress(self, force: bool) -> None:
        """Record verified pieces, at most every PROGRESS_SAVE_INTERVAL_S.

        A skipped save is made up for by a trailing one, so a download that stalls (or
        is killed) right after a burst of pieces still has them all on record. The file
        holds the digests of the contiguous prefix only (a resume re-checks nothing
        else), so while the prefix stands still there is nothing new to write: in a
        swarm pieces arrive out of order, and rewriting the same file twice a second
        per blob cost a peer about 8% of its CPU.
        """
        if not force and self._pieces.prefix == self._saved_prefix:
            return
        now = time.monotonic()
        if not force and now - self._last_save < PROGRESS_SAVE_INTERVAL_S:
            if self._trailing_save is None:
                self._trailing_save = asyncio.get_running_loop().call_later(
                    PROGRESS_SAVE_INTERVAL_S, self._trailing_save_due
                )
            return
        self._cancel_trailing_save()
        self._last_save = now
        self._saved_prefix = self._pieces.prefix
        try:
            self.store.save_progress(
                TaskProgress(
                    self.digest,
                    self.size_bytes,
                    self.layout.piece_bytes,
                    [d for d in self._digests[: self._pieces.prefix] if d is not None],
                )
            )
        except (OSError, StorageError) as exc:
            # Progress only speeds up a resume: a full disk must not fail the download.
            self._saved_prefix = -1  # try again at the next piece
            log.warning("%s: cannot save progress: %s", self.digest, exc)

    def dup_fd(self) -> int:
        """A descriptor of the task file for a reader; it stays valid after completion."""
        return os.dup(self._fd)

    def _trailing_save_due(self) -> None:
        self._trailing_save = None
        if self.state is TaskState.RUNNING:  # an ended task wrote or removed its own
            self._save_progress(force=True)

    def _cancel_trailing_save(self) -> None:
        if self._trailing_save is not None:
            self._trailing_save.cancel()
            self._trailing_save = None

    def close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
