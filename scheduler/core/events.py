"""Events the scheduler core consumes. Each validates its own fields on construction.

The service builds these from JSON requests (so a bad field becomes an
``InvalidEventError`` naming it) and the simulator builds them directly. Either way they
go through ``SchedulerState.apply`` or the matching method, from one writer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeAlias

from scheduler.core.errors import InvalidEventError


def _require_id(name: str, value: str) -> None:
    if not value:
        raise InvalidEventError(name, "must be a non-empty string")


def _require_non_negative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidEventError(name, f"must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class HostAnnounced:
    """A host's daemon says it is alive, where to fetch pieces from it, and its load.

    ``location`` is a ``"|"``-separated hierarchy, most general first
    (``"country|region|city|zone|cluster"``).
    """

    host_id: str
    address: str
    piece_port: int
    upload_capacity_bps: float
    download_capacity_bps: float
    upload_slots: int
    is_seed: bool = False
    idc: str = ""
    rack: str = ""
    location: str = ""
    # The host's own view of its load at announce time.
    upload_count: int = 0
    upload_bps: float = 0.0

    def __post_init__(self) -> None:
        _require_id("host_id", self.host_id)
        _require_id("address", self.address)
        if not 0 < self.piece_port < 65536:
            raise InvalidEventError("piece_port", f"must be in 1..65535, got {self.piece_port}")
        _require_non_negative("upload_capacity_bps", self.upload_capacity_bps)
        _require_non_negative("download_capacity_bps", self.download_capacity_bps)
        _require_non_negative("upload_slots", self.upload_slots)
        _require_non_negative("upload_count", self.upload_count)
        _require_non_negative("upload_bps", self.upload_bps)


@dataclass(frozen=True)
class HostExpired:
    """The host stopped announcing (or shut down cleanly); its peers leave with it."""

    host_id: str


@dataclass(frozen=True)
class PeerRegistered:
    """A host starts (or, after a scheduler restart, resumes) work on one blob.

    ``pieces`` are the pieces the peer already holds, so peers can re-register what they
    have when a scheduler comes back.
    """

    peer_id: str
    task_id: str
    host_id: str
    size_bytes: int
    piece_bytes: int
    pieces: frozenset[int] = field(default_factory=frozenset)
    # The digest of every piece, in order, from a peer that holds the whole blob and
    # verified its sha256: such a peer vouches for every piece (after a scheduler restart
    # no origin report is left to trust).
    piece_digests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require_id("peer_id", self.peer_id)
        _require_id("task_id", self.task_id)
        _require_id("host_id", self.host_id)
        _require_non_negative("size_bytes", self.size_bytes)
        if self.piece_bytes <= 0:
            raise InvalidEventError("piece_bytes", f"must be > 0, got {self.piece_bytes}")
        piece_count = -(-self.size_bytes // self.piece_bytes)
        for index in self.pieces:
            if not 0 <= index < piece_count:
                raise InvalidEventError("pieces", f"piece {index} outside 0..{piece_count - 1}")
        if self.piece_digests and (
            len(self.piece_digests) != piece_count or len(self.pieces) != piece_count
        ):
            raise InvalidEventError(
                "piece_digests",
                f"only a peer holding all {piece_count} pieces may vouch for their digests, "
                f"one each",
            )


@dataclass(frozen=True)
class PieceReport:
    """One piece transfer: from ``parent_id`` (None: the origin), ok or failed.

    ``digest`` is the piece digest the child computed over the bytes it received
    (``"sha256:<hex>"``). It is optional: a child that does not hash pieces, or whose
    piece failed, has nothing to say about the content.
    """

    piece_index: int
    parent_id: str | None
    size_bytes: int
    cost_s: float
    ok: bool = True
    digest: str | None = None

    def __post_init__(self) -> None:
        _require_non_negative("piece_index", self.piece_index)
        if self.parent_id is not None:
            _require_id("parent_id", self.parent_id)
        _require_non_negative("size_bytes", self.size_bytes)
        _require_non_negative("cost_s", self.cost_s)
        if self.digest is not None:
            _require_id("digest", self.digest)


@dataclass(frozen=True)
class PiecesReported:
    """A batch of transfers by one peer; the batch is checked whole before any is applied."""

    peer_id: str
    reports: tuple[PieceReport, ...]

    def __post_init__(self) -> None:
        _require_id("peer_id", self.peer_id)


@dataclass(frozen=True)
class ParentReported:
    """A child gives up on a parent without a piece to show for it (slow, unreachable)."""

    peer_id: str
    parent_id: str


@dataclass(frozen=True)
class PeerFinished:
    """The peer holds every piece and verified the blob digest."""

    peer_id: str


@dataclass(frozen=True)
class PeerFailed:
    """The peer gave up on the task; it is removed like a peer that left.

    ``reason`` is the peer's own word for it (``"digest_mismatch"``, ``"origin_error"``),
    kept for logs and metrics; the core treats every failure alike.
    """

    peer_id: str
    reason: str | None = None

    def __post_init__(self) -> None:
        _require_id("peer_id", self.peer_id)
        if self.reason is not None:
            _require_id("reason", self.reason)


@dataclass(frozen=True)
class PeerLeft:
    """The peer stopped (pull cancelled, blob evicted, daemon shutting down)."""

    peer_id: str


Event: TypeAlias = (
    HostAnnounced
    | HostExpired
    | PeerRegistered
    | PiecesReported
    | ParentReported
    | PeerFinished
    | PeerFailed
    | PeerLeft
)
