"""Where transfer records and model artifacts are kept, and moving records there.

The learned evaluator (issue 5) trains on transfer records (who fetched which piece from
whom, how fast, with what the scheduler could observe at the time) and loads model
artifacts. Both go through the two interfaces below, so the scheduler does not care
where they live:

- files under a directory (``FileRecordStore``, ``FileArtifactStore``), the embedded
  default: one machine needs nothing else;
- Redis, for several replicas sharing training data and models (``redis_store``):
  records appended to a capped stream ``{redis_key_prefix}records`` and artifacts at
  ``{redis_key_prefix}artifact:{name}``, next to the replica membership.

Which stores a scheduler uses follows from its config (``stores``): records go to Redis
whenever ``redis_url`` is set (unless ``records_redis_max_len`` is 0), and to files
whenever ``records_dir`` is set; both may be on at once.

A record is a JSON object: ``scheduler.core.transfers`` defines the schema. The core's
recorder buffers them; ``RecordFlusher`` drains it through the writer every
``records_flush_s`` and appends the batch to every store, off the decision path. A
store that fails (Redis down) keeps its records in a bounded backlog and gets them again
at the next flush; what does not fit is dropped, logged and counted. Records are
training data, not state: losing some costs a little data, never a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from scheduler.core import SchedulerState
from scheduler.core.transfers import TransferRecord
from scheduler.service.redis_store import StoreUnavailable
from scheduler.service.writer import StateWriter

log = logging.getLogger(__name__)

_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RECORDS_FILE = "records.jsonl"
# The records file is rotated past this size (``records.jsonl.1``, ``.2``, ...; the
# highest number is the newest rotated file), and the oldest rotated files are deleted
# beyond ``DEFAULT_KEEP_FILES``: about 1 GiB of records by default.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP_FILES = 16
# Records a failing store may owe before the oldest are dropped: about 10 MB of memory.
DEFAULT_BACKLOG_MAX = 10_000
# A store that does not answer at shutdown does not hold the shutdown up longer.
_FINAL_FLUSH_TIMEOUT_S = 5.0


class RecordStore(Protocol):
    async def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Add records after those already kept."""

    async def read(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` records, oldest first."""


class ArtifactStore(Protocol):
    async def put(self, name: str, data: bytes) -> None:
        """Keep ``data`` as ``name``, replacing what was there, never half-written."""

    async def get(self, name: str) -> bytes | None:
        """The artifact ``name``; None when there is none."""

    async def stamp(self, name: str) -> str | None:
        """A cheap token that changes whenever ``name`` is replaced; None when absent.
        Pollers compare it before they fetch the artifact itself."""


class FileRecordStore:
    """Records as JSON Lines in ``directory/records.jsonl``, rotated by size."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        keep_files: int = DEFAULT_KEEP_FILES,
    ) -> None:
        self.path = Path(directory) / RECORDS_FILE
        self.max_file_bytes = max_file_bytes
        self.keep_files = keep_files

    async def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        lines = "".join(json.dumps(dict(r), separators=(",", ":")) + "\n" for r in records)
        await asyncio.to_thread(self._append, lines)

    def _append(self, lines: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(lines) > self.max_file_bytes:
            self._rotate()
        with self.path.open("a") as fh:
            fh.write(lines)

    def rotated(self) -> list[Path]:
        """Rotated files, oldest first."""
        found = []
        for path in self.path.parent.glob(RECORDS_FILE + ".*"):
            suffix = path.name.rsplit(".", 1)[1]
            if suffix.isdigit():
                found.append((int(suffix), path))
        return [path for _, path in sorted(found)]

    def _rotate(self) -> None:
        old = self.rotated()
        number = int(old[-1].name.rsplit(".", 1)[1]) + 1 if old else 1
        os.replace(self.path, self.path.with_name(f"{RECORDS_FILE}.{number}"))
        for path in old[: max(0, len(old) + 1 - self.keep_files)]:
            path.unlink(missing_ok=True)

    async def read(self, limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._read, limit)

    def _read(self, limit: int) -> list[dict[str, Any]]:
        lines: list[str] = []
        for path in [*self.rotated(), self.path]:
            try:
                lines.extend(path.read_text().splitlines())
            except FileNotFoundError:
                continue
        # A line cut short by a crash mid-write is skipped, not fatal.
        records = []
        for line in lines[-limit:] if limit > 0 else []:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


class FileArtifactStore:
    """Artifacts as files in ``directory``, replaced by rename so readers never see half."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        if not _ARTIFACT_NAME.fullmatch(name):
            raise ValueError(f"artifact name {name!r}: letters, digits, '.', '_', '-'")
        return self.directory / name

    async def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        await asyncio.to_thread(self._put, path, data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    async def get(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def stamp(self, name: str) -> str | None:
        """The file's identity: a rename over it changes the inode, a rewrite the mtime."""
        path = self._path(name)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return None
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class _Sink:
    """One store and the records it still owes: retried at each flush, oldest dropped first."""

    def __init__(self, name: str, store: RecordStore) -> None:
        self.name = name
        self.store = store
        self.backlog: list[TransferRecord] = []
        self.failing = False


class RecordMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "p2p_scheduler_transfer_records",
            "Transfer records, by store (file, redis) and outcome (written; dropped: the "
            "store failed past the backlog, or the recorder's buffer was full).",
            ["store", "outcome"],
            registry=registry,
        )
        self.backlog = Gauge(
            "p2p_scheduler_transfer_records_backlog",
            "Records a failing store owes, kept in memory and retried at the next flush.",
            ["store"],
            registry=registry,
        )


class RecordFlusher:
    """Moves the core recorder's records to every store every ``interval_s``.

    The drain is one writer operation (the recorder belongs to the state); the appends
    run outside it, so a slow disk or an unreachable Redis never holds up a decision.
    A store that fails keeps up to ``backlog_max`` records for the next flush; the rest
    are dropped, counted per store and logged once per outage.
    """

    def __init__(
        self,
        writer: StateWriter,
        stores: Mapping[str, RecordStore],
        interval_s: float,
        registry: CollectorRegistry,
        backlog_max: int = DEFAULT_BACKLOG_MAX,
    ) -> None:
        self._writer = writer
        self._sinks = [_Sink(name, store) for name, store in stores.items()]
        self._interval_s = interval_s
        self._backlog_max = backlog_max
        self._task: asyncio.Task[None] | None = None
        metrics = RecordMetrics(registry)
        self.records = metrics.records
        self.backlog = metrics.backlog
        for sink in self._sinks:
            self.records.labels(sink.name, "written")
            self.records.labels(sink.name, "dropped")
            self.backlog.labels(sink.name).set(0)
        self._dropped_seen = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="transfer records")

    async def stop(self) -> None:
        """Stop the loop and write what is left (the writer must still be running)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), _FINAL_FLUSH_TIMEOUT_S)

    async def flush(self) -> int:
        """Drain and append now; the number of records drained."""

        def drain(state: SchedulerState, now: float, rng: random.Random) -> tuple[Any, int]:
            recorder = state.recorder
            if recorder is None:
                return [], 0
            return recorder.drain(), recorder.dropped

        batch, dropped = await self._writer.submit(drain)
        records: list[TransferRecord] = batch
        if dropped > self._dropped_seen:
            # Dropped before any store saw them: every store lost them.
            for sink in self._sinks:
                self.records.labels(sink.name, "dropped").inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
        await asyncio.gather(*(self._deliver(sink, records) for sink in self._sinks))
        return len(records)

    async def _deliver(self, sink: _Sink, records: list[TransferRecord]) -> None:
        batch = sink.backlog + records
        if not batch:
            return
        sink.backlog = []
        try:
            await sink.store.append([record.to_json() for record in batch])
        except Exception as exc:
            kept = batch[len(batch) - self._backlog_max :] if self._backlog_max else []
            lost = len(batch) - len(kept)
            sink.backlog = kept
            self.backlog.labels(sink.name).set(len(kept))
            if lost:
                self.records.labels(sink.name, "dropped").inc(lost)
            if not sink.failing:
                sink.failing = True
                log.warning(
                    "the %s record store failed (%s): keeping up to %d records to retry at "
                    "each flush, dropping older ones (p2p_scheduler_transfer_records_total"
                    '{outcome="dropped"}); scheduling goes on',
                    sink.name,
                    exc,
                    self._backlog_max,
                    exc_info=not isinstance(exc, StoreUnavailable),
                )
            return
        if sink.failing:
            sink.failing = False
            log.info("the %s record store works again: %d records written", sink.name, len(batch))
        self.backlog.labels(sink.name).set(0)
        self.records.labels(sink.name, "written").inc(len(batch))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("writing transfer records failed")
