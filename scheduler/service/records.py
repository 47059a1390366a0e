"""Where transfer records and model artifacts are kept: the seam issue 5 builds on.

The learned evaluator (issue 5) trains on transfer records (who fetched which piece from
whom, how fast, with what the scheduler could observe at the time) and loads model
artifacts. Both go through the two interfaces below, so the scheduler does not care
where they live:

- the embedded default, files under a directory: one machine needs nothing else;
- Redis, for several replicas sharing training data: records appended to a stream
  ``{redis_key_prefix}records`` and artifacts at ``{redis_key_prefix}artifact:{name}``,
  next to the replica membership (``redis_store``). Not built yet: a Redis stream store
  implements ``RecordStore`` and plugs into ``RecordFlusher`` as the file store does.

A record is a JSON object: ``scheduler.core.transfers`` defines the schema. The core's
recorder buffers them; ``RecordFlusher`` drains it through the writer every
``records_flush_s`` and appends the batch to the store, off the decision path.
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

from prometheus_client import CollectorRegistry, Counter

from scheduler.core import SchedulerState
from scheduler.core.transfers import TransferRecord
from scheduler.service.writer import StateWriter

log = logging.getLogger(__name__)

_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RECORDS_FILE = "records.jsonl"
# The records file is rotated past this size (``records.jsonl.1``, ``.2``, ...; the
# highest number is the newest rotated file), and the oldest rotated files are deleted
# beyond ``DEFAULT_KEEP_FILES``: about 1 GiB of records by default.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP_FILES = 16


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


class RecordFlusher:
    """Moves the core recorder's records to a store every ``interval_s``.

    The drain is one writer operation (the recorder belongs to the state); the append
    runs outside it, so a slow disk or Redis never holds up a decision. A failed append
    drops that batch, counted and logged: records are training data, not state.
    """

    def __init__(
        self,
        writer: StateWriter,
        store: RecordStore,
        interval_s: float,
        registry: CollectorRegistry,
    ) -> None:
        self._writer = writer
        self._store = store
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.records = Counter(
            "p2p_scheduler_transfer_records",
            "Transfer records, by outcome (written; dropped: the store failed or the buffer "
            "was full).",
            ["outcome"],
            registry=registry,
        )
        self.records.labels("written")
        self.records.labels("dropped")
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
            await self.flush()

    async def flush(self) -> int:
        """Drain and append now; the number of records written."""

        def drain(state: SchedulerState, now: float, rng: random.Random) -> tuple[Any, int]:
            recorder = state.recorder
            if recorder is None:
                return [], 0
            return recorder.drain(), recorder.dropped

        batch, dropped = await self._writer.submit(drain)
        records: list[TransferRecord] = batch
        if dropped > self._dropped_seen:
            self.records.labels("dropped").inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
        if not records:
            return 0
        try:
            await self._store.append([record.to_json() for record in records])
        except Exception:
            self.records.labels("dropped").inc(len(records))
            log.exception("%d transfer records lost: the record store failed", len(records))
            return 0
        self.records.labels("written").inc(len(records))
        return len(records)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("writing transfer records failed")
