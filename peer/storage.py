"""The peer's files on disk: complete blobs, partial task files and their metadata.

Layout under the data dir::

    blobs/<algorithm>/<hex>         a complete, verified blob
    blobs/<algorithm>/<hex>.json    its metadata (size, piece length, piece digests)
    tasks/<algorithm>/<hex>.part    a download in progress, preallocated to full size
    tasks/<algorithm>/<hex>.json    which pieces of it are written

A blob only ever appears under ``blobs/`` by a rename after its sha256 matched, so a
crash cannot leave a half-written file that looks complete. Every path is derived from
a validated digest, never from raw client input, and only these two directories are
ever written or deleted. Cleaning up (a startup scan, the sweep of stale partials) only
touches files named after a digest in that layout: anything else an operator or another
program put there is left alone.

A full disk fails the one operation cleanly with :class:`StorageError`: opening a task
removes what it created, and a blob that cannot be committed stays a task file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_DIGEST_RE = re.compile(r"(sha256|sha512):([a-f0-9]{64,128})")
_TEMP_SUFFIX = ".tmp"  # what _write_json_atomic writes before its rename
METADATA_VERSION = 1


class StorageError(Exception):
    """A file of the cache could not be read or written (disk full, permissions)."""


@dataclass
class BlobMeta:
    digest: str
    size_bytes: int
    piece_bytes: int
    piece_digests: list[str] = field(default_factory=list)
    version: int = METADATA_VERSION


@dataclass
class TaskProgress:
    """A download in progress: the digests of the pieces verified so far, in order.

    Only that verified prefix is resumed after a restart, each piece checked again
    against its recorded digest; pieces fetched but not yet verified are fetched again.
    """

    digest: str
    size_bytes: int
    piece_bytes: int
    piece_digests: list[str] = field(default_factory=list)
    version: int = METADATA_VERSION


@dataclass(frozen=True)
class CachedBlob:
    digest: str
    size_bytes: int
    last_used: float


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.tasks_dir = self.root / "tasks"
        for directory in (self.blobs_dir, self.tasks_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # Paths -----------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, encoded = _split(digest)
        return self.blobs_dir / algorithm / encoded

    def part_path(self, digest: str) -> Path:
        algorithm, encoded = _split(digest)
        return self.tasks_dir / algorithm / f"{encoded}.part"

    # Complete blobs --------------------------------------------------------------

    def scan_complete(self) -> list[CachedBlob]:
        """Complete blobs on disk, least recently used first.

        A blob whose metadata is missing or disagrees with the file is deleted: it
        cannot be trusted to be the content its name claims.
        """
        found: list[CachedBlob] = []
        for meta_path in self.blobs_dir.glob("*/*.json"):
            digest = _own_digest(meta_path.parent.name, meta_path.stem)
            if digest is None:
                continue  # not ours: never read, never deleted
            blob_path = meta_path.with_suffix("")
            try:
                meta = BlobMeta(**json.loads(meta_path.read_text()))
                stat = blob_path.stat()
            except (OSError, ValueError, TypeError) as exc:
                log.warning("dropping unreadable cached blob %s: %s", digest, exc)
                self.remove_blob(digest)
                continue
            if meta.digest != digest or stat.st_size != meta.size_bytes:
                log.warning("dropping cached blob %s: metadata does not match the file", digest)
                self.remove_blob(digest)
                continue
            found.append(CachedBlob(digest, meta.size_bytes, meta_path.stat().st_mtime))
        for stray in self.blobs_dir.glob("*/*"):
            if _own_digest(stray.parent.name, stray.name) is None:
                continue
            if not stray.with_suffix(".json").exists():
                log.warning("removing cached blob file without metadata: %s", stray)
                stray.unlink(missing_ok=True)
        return sorted(found, key=lambda blob: blob.last_used)

    def blob_meta(self, digest: str) -> BlobMeta | None:
        try:
            return BlobMeta(**json.loads(self.blob_path(digest).with_suffix(".json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def touch(self, digest: str) -> None:
        """Record a use, so least-recently-used order survives a restart."""
        with contextlib.suppress(OSError):
            os.utime(self.blob_path(digest).with_suffix(".json"))

    def remove_blob(self, digest: str) -> None:
        path = self.blob_path(digest)
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)

    # Tasks in progress -------------------------------------------------------------

    def open_task(self, digest: str, size_bytes: int, piece_bytes: int) -> tuple[int, list[str]]:
        """Open (or create, preallocated) the task file; returns its fd and the recorded
        digests of the verified pieces an earlier run left.

        Progress from an earlier run is reused only if it describes the same layout.
        Raises :class:`StorageError` when the disk cannot hold the blob.
        """
        part = self.part_path(digest)
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {part.parent}: {exc}") from exc
        present: list[str] = []
        progress = self._read_progress(digest)
        if (
            progress is not None
            and progress.size_bytes == size_bytes
            and progress.piece_bytes == piece_bytes
            and part.exists()
            and part.stat().st_size == size_bytes
        ):
            present = list(progress.piece_digests)
        else:
            self.discard_task(digest)
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open {part}: {exc}") from exc
        try:
            if size_bytes > 0 and not present:
                # Reserve the space now: a full disk fails the task before any byte moves.
                os.posix_fallocate(fd, 0, size_bytes)
            os.ftruncate(fd, size_bytes)
        except OSError as exc:
            os.close(fd)
            self.discard_task(digest)
            raise StorageError(f"cannot allocate {size_bytes} bytes for {digest}: {exc}") from exc
        if not present:
            try:
                self.save_progress(TaskProgress(digest, size_bytes, piece_bytes, []))
            except StorageError:
                os.close(fd)
                self.discard_task(digest)
                raise
        return fd, present

    def save_progress(self, progress: TaskProgress) -> None:
        _write_json_atomic(self.part_path(progress.digest).with_suffix(".json"), asdict(progress))

    def commit(self, meta: BlobMeta) -> Path:
        """Turn a verified task file into a complete blob (atomic rename).

        Raises :class:`StorageError` (the metadata cannot be written: a full disk) with
        nothing of the blob left under ``blobs/``.
        """
        part = self.part_path(meta.digest)
        target = self.blob_path(meta.digest)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(target.with_suffix(".json"), asdict(meta))
            os.replace(part, target)
        except OSError as exc:
            target.with_suffix(".json").unlink(missing_ok=True)
            raise StorageError(f"cannot store {meta.digest}: {exc}") from exc
        except StorageError:
            target.with_suffix(".json").unlink(missing_ok=True)
            raise
        part.with_suffix(".json").unlink(missing_ok=True)
        return target

    def discard_task(self, digest: str) -> None:
        part = self.part_path(digest)
        part.unlink(missing_ok=True)
        part.with_suffix(".json").unlink(missing_ok=True)

    def partial_tasks(self) -> list[str]:
        found = (_own_digest(p.parent.name, p.stem) for p in self.tasks_dir.glob("*/*.part"))
        return [digest for digest in found if digest is not None]

    def sweep(self, now: float, partial_ttl_s: float) -> int:
        """Delete leftovers of interrupted writes and partial downloads nobody resumed.

        Returns the number of files removed. Only files of our own layout are touched.
        """
        removed = 0
        for leftover in [*self.blobs_dir.glob("*/*.tmp"), *self.tasks_dir.glob("*/*.tmp")]:
            # Ours are "<hex>.json.tmp" (and "<hex>.part.tmp" would be too).
            stem = leftover.name.removesuffix(_TEMP_SUFFIX).split(".", 1)[0]
            if _own_digest(leftover.parent.name, stem) is None:
                continue
            leftover.unlink(missing_ok=True)
            removed += 1
        for part in self.tasks_dir.glob("*/*.part"):
            digest = _own_digest(part.parent.name, part.stem)
            if digest is None:
                continue
            progress = part.with_suffix(".json")
            try:
                last_touched = max(part.stat().st_mtime, progress.stat().st_mtime)
            except OSError:
                last_touched = 0.0  # no progress record: nothing in it can be trusted
            if now - last_touched > partial_ttl_s:
                log.info(
                    "removing partial download %s, untouched for over %ds", part, partial_ttl_s
                )
                self.discard_task(digest)
                removed += 1
        return removed

    def _read_progress(self, digest: str) -> TaskProgress | None:
        try:
            raw = json.loads(self.part_path(digest).with_suffix(".json").read_text())
            progress = TaskProgress(**raw)
        except (OSError, ValueError, TypeError):
            return None
        return progress if progress.version == METADATA_VERSION else None


def _split(digest: str) -> tuple[str, str]:
    match = _DIGEST_RE.fullmatch(digest)
    if match is None:
        raise ValueError(f"not a storable digest: {digest!r}")
    return match.group(1), match.group(2)


def _own_digest(algorithm: str, encoded: str) -> str | None:
    """The digest a file of our layout is named after, or None if the name is not one."""
    digest = f"{algorithm}:{encoded}"
    return digest if _DIGEST_RE.fullmatch(digest) else None


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + _TEMP_SUFFIX)
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc}") from exc
