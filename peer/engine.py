"""The peer engine: one download task per blob digest, and the cache of complete blobs.

Every client asking for a blob either reads the complete file or joins the one task
downloading it; a task runs on its own, so a client that goes away does not stop a
download other clients rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from peer.backsource import OriginSupplier, PieceTransfer
from peer.cache import CacheIndex
from peer.conductor import SwarmSupplier
from peer.config import PeerConfig
from peer.metrics import PeerMetrics
from peer.origin import BlobOrigin, OriginFetcher
from peer.parent_client import ParentClient
from peer.pieces import PieceLayout, piece_length_for
from peer.scheduler_client import SchedulerClient
from peer.storage import BlobMeta, BlobStore
from peer.task import BlobTask, PieceSupplier, TaskState
from registry_proxy.upstream import UpstreamClient

log = logging.getLogger(__name__)

# A partial download nobody asked for again within a day is deleted at startup.
PARTIAL_TASK_TTL_S = 24 * 3600.0


class CacheFull(Exception):
    """The blob does not fit under the cache quota even after evicting what is idle."""


@dataclass(frozen=True)
class SwarmClients:
    """What peer-to-peer downloads need: the scheduler and the parents' piece servers."""

    scheduler: SchedulerClient
    parents: ParentClient


def peer_id_for(host_id: str, digest: str) -> str:
    """The scheduler's name for this host's work on one blob."""
    return f"{host_id}_{digest.split(':', 1)[1]}"


@dataclass(frozen=True)
class CompleteBlob:
    digest: str
    size_bytes: int
    path: str


class Engine:
    def __init__(
        self,
        config: PeerConfig,
        store: BlobStore,
        client: UpstreamClient,
        metrics: PeerMetrics,
        swarm: SwarmClients | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.index = CacheIndex(config.cache_quota_bytes)
        self._client = client
        self._swarm = swarm
        self._rng = random.Random()
        self._tasks: dict[str, BlobTask] = {}
        self._metas: dict[str, BlobMeta] = {}  # read from disk once per complete blob

    @property
    def scheduler(self) -> SchedulerClient | None:
        """The scheduler client, when this peer works in a swarm."""
        return self._swarm.scheduler if self._swarm is not None else None

    def load(self) -> None:
        """Index the complete blobs a previous run left (partial ones resume on demand)."""
        self.store.sweep(time.time(), PARTIAL_TASK_TTL_S)
        for blob in self.store.scan_complete():
            self.index.add(blob.digest, blob.size_bytes)
        partial = self.store.partial_tasks()
        for digest in partial:
            self._keep_partial(digest)
        log.info(
            "cache: %d complete blobs (%d bytes), %d partial downloads to resume on demand",
            len(self.index),
            self.index.blob_bytes,
            len(partial),
        )
        self.metrics.cache_quota_bytes.set(self.index.quota_bytes)
        self._update_cache_gauges()

    async def wake_waiters(self) -> None:
        """Wake every request waiting on a task (the peer is closing: they answer now)."""
        await asyncio.gather(*(task.wake() for task in list(self._tasks.values())))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        await asyncio.gather(*(task.cancel() for task in tasks), return_exceptions=True)

    # Lookups -------------------------------------------------------------------------

    def complete(self, digest: str) -> CompleteBlob | None:
        size_bytes = self.index.size_of(digest)
        if size_bytes is None:
            return None
        return CompleteBlob(digest, size_bytes, str(self.store.blob_path(digest)))

    @property
    def active_tasks(self) -> int:
        return len(self._tasks)

    def blob_meta(self, digest: str) -> BlobMeta | None:
        """Piece length and digests of a complete blob, kept in memory after the first read:
        every piece request another peer makes for the blob needs them."""
        if digest not in self.index:
            return None
        meta = self._metas.get(digest)
        if meta is None:
            meta = self.store.blob_meta(digest)
            if meta is not None:
                self._metas[digest] = meta
        return meta

    def running(self, digest: str) -> BlobTask | None:
        return self._tasks.get(digest)

    @contextlib.contextmanager
    def reading(self, digest: str) -> Iterator[None]:
        """Protect a blob from eviction while a client reads it."""
        self.index.acquire(digest)
        try:
            yield
        finally:
            self.index.release(digest)
            if digest in self.index:
                self.index.touch(digest)
                self.store.touch(digest)

    # Downloads -----------------------------------------------------------------------

    def ensure_task(self, origin: BlobOrigin, size_bytes: int) -> BlobTask:
        """The running task for this blob, or a new one downloading from the origin.

        Raises :class:`CacheFull` or :class:`peer.storage.StorageError`.
        """
        task = self._tasks.get(origin.digest)
        if task is not None:
            return task
        self.index.remove_partial(origin.digest)  # resumed: reserved as a task below
        self._make_room(origin.digest, size_bytes)
        layout = PieceLayout(
            size_bytes,
            piece_length_for(
                size_bytes,
                self.config.min_piece_bytes,
                self.config.max_piece_bytes,
                self.config.target_pieces,
            ),
        )
        task = BlobTask(origin.digest, layout, self.store, self._supplier_for(origin))
        self.index.reserve(origin.digest, size_bytes)
        try:
            task.start(self._task_done)
        except Exception:
            self.index.unreserve(origin.digest)
            raise
        self._tasks[origin.digest] = task
        self.metrics.tasks_active.set(len(self._tasks))
        log.info(
            "%s: downloading %d bytes from %s in %d pieces of %d bytes",
            origin.digest,
            size_bytes,
            origin.upstream.registry,
            layout.count,
            layout.piece_bytes,
        )
        return task

    def _supplier_for(self, origin: BlobOrigin) -> PieceSupplier:
        metrics = self.metrics
        origin_piece_cost = metrics.piece_cost.labels("origin")

        def from_origin(
            on_piece: Callable[[PieceTransfer], None], concurrency: int | None = None
        ) -> OriginSupplier:
            # Every way to the registry passes here: the scheduler's "back to source", a
            # scheduler that cannot be reached, or no scheduler at all.
            metrics.back_to_source.inc()

            def counted(transfer: PieceTransfer) -> None:
                origin_piece_cost.observe(transfer.cost_s)
                on_piece(transfer)

            return OriginSupplier(
                OriginFetcher(self._client, origin),
                concurrency or self.config.origin_concurrency,
                self.config.piece_attempts,
                on_bytes=metrics.download_bytes.labels("origin").inc,
                on_piece=counted,
            )

        if self._swarm is None:
            return from_origin(lambda transfer: None)
        return SwarmSupplier(
            peer_id=peer_id_for(self.config.host_id, origin.digest),
            host_id=self.config.host_id,
            scheduler=self._swarm.scheduler,
            parents=self._swarm.parents,
            origin=from_origin,
            pieces_in_flight=self.config.pieces_in_flight,
            metrics=self.metrics,
            rng=self._rng,
        )

    def _make_room(self, digest: str, size_bytes: int) -> None:
        victims = self.index.plan_eviction(size_bytes)
        if victims is None:
            raise CacheFull(
                f"{digest} ({size_bytes} bytes) does not fit in the cache quota of "
                f"{self.config.cache_quota_bytes} bytes ({self.index.used_bytes} in use)"
            )
        for victim in victims:
            if self.index.is_partial(victim):
                log.info("dropping partial download %s to make room for %s", victim, digest)
                self.index.remove_partial(victim)
                self.store.discard_task(victim)
                continue
            log.info("evicting %s to make room for %s", victim, digest)
            self.metrics.cache_evicted_bytes.inc(self.index.size_of(victim) or 0)
            self.index.remove(victim)
            self._metas.pop(victim, None)
            self.store.remove_blob(victim)
            self.metrics.cache_evictions.inc()

    async def _task_done(self, task: BlobTask) -> None:
        try:
            await task.supplier.finish(task)
        except Exception:  # Telling others must never keep the task from ending.
            log.exception("%s: reporting the end of the task failed", task.digest)
        self._tasks.pop(task.digest, None)
        self.index.unreserve(task.digest)
        task.close_file()
        for read_from, count in task.verified_bytes.items():
            self.metrics.verified_bytes.labels(read_from).inc(count)
        if task.state is TaskState.COMPLETE:
            self.index.add(task.digest, task.size_bytes)
            self.metrics.task_results.labels("complete").inc()
            self.metrics.blob_download_duration.observe(time.monotonic() - task.started_at)
        else:
            self.metrics.task_results.labels("failed").inc()
            self._keep_partial(task.digest)
        self.metrics.tasks_active.set(len(self._tasks))
        self._update_cache_gauges()

    def _keep_partial(self, digest: str) -> None:
        """Count a partial download left on disk (if it is) against the quota."""
        try:
            size_bytes = self.store.part_path(digest).stat().st_size
        except OSError:
            return  # nothing kept
        self.index.add_partial(digest, size_bytes)

    def _update_cache_gauges(self) -> None:
        self.metrics.cache_bytes.set(self.index.blob_bytes)
        self.metrics.cache_blobs.set(len(self.index))

    def open_complete(self, digest: str) -> int:
        return os.open(self.store.blob_path(digest), os.O_RDONLY)

    def remove_complete(self, digest: str) -> None:
        """Delete a complete blob an operator asked to remove (``p2pctl cache rm``).

        The caller checks first that it is cached and that no client is reading it.
        """
        log.info("removing %s from the cache on request", digest)
        self.index.remove(digest)
        self._metas.pop(digest, None)
        self.store.remove_blob(digest)
        self._update_cache_gauges()
