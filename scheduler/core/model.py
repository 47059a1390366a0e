"""The records the scheduler keeps: hosts, tasks and peers, and the links between them.

A *host* is one node's daemon; a *task* is one blob (its id is the blob digest); a *peer*
is one host working on one task. Peers point at their host and task objects directly so
the hot path never looks anything up by id. The parent graph lives on the peers
(``parents`` / ``children``); the task keeps the indices candidate sampling needs.

Only ``SchedulerState`` mutates these records. Evaluators and filters read them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TypeVar

from scheduler.core.claims import RackClaims
from scheduler.core.origin_shares import OriginShares
from scheduler.core.piece_costs import PieceCostWindow
from scheduler.core.random_set import RandomSet

# Time constant of a host's decaying count of uploaded bytes. Dragonfly judges sustained
# upload load over a 60 s window; an exponential decay gives the same scale without
# keeping a per-host history of transfers.
UPLOAD_WINDOW_S = 60.0
# Weight of the newest piece in a host's moving averages of realized throughput. Piece
# throughputs scatter by a factor of two or more from one piece to the next (shared
# links, disk), so one piece moves the average by a fifth: about the last ten pieces
# count, recent enough to see a parent slow down within a second or two of transfers.
THROUGHPUT_EWMA_WEIGHT = 0.2


class PeerState(enum.Enum):
    PENDING = "pending"  # registered, no decision handed out yet
    RUNNING = "running"  # has parents, or was sent to the origin
    SUCCEEDED = "succeeded"  # holds every piece; has no parents any more


@dataclass(eq=False, slots=True)
class Host:
    """One node's daemon as it last announced itself, plus what the scheduler observed."""

    host_id: str
    address: str
    piece_port: int
    upload_capacity_bps: float
    download_capacity_bps: float
    upload_slots: int
    is_seed: bool
    idc: str
    rack: str
    location: str
    # Load as the host itself last announced it.
    announced_upload_count: int
    announced_upload_bps: float
    last_announce_s: float
    peers: dict[str, Peer] = field(default_factory=dict)
    # Parent -> child edges from this host's peers, over all tasks: the upload slots the
    # scheduler has handed out. Updated at every decision, so it is never stale.
    children_count: int = 0
    upload_ok_count: int = 0
    upload_failed_count: int = 0
    _recent_upload_bytes: float = field(default=0.0, init=False)
    _recent_upload_at_s: float = field(default=0.0, init=False)
    # Moving averages of ln(bytes/s) of the pieces children reported from this host, over
    # all children and per child rack ((idc, rack) -> (average, pieces)), and how many
    # pieces went into the overall one. Features of the learned evaluator.
    throughput_log_ewma: float = field(default=0.0, init=False)
    throughput_samples: int = field(default=0, init=False)
    rack_throughput: dict[tuple[str, str], tuple[float, int]] = field(
        default_factory=dict, init=False
    )

    def record_upload(self, size_bytes: int, now: float) -> None:
        self._recent_upload_bytes = self.recent_upload_bytes(now) + size_bytes
        self._recent_upload_at_s = max(now, self._recent_upload_at_s)

    def record_throughput(
        self, child_rack: tuple[str, str], size_bytes: int, cost_s: float
    ) -> None:
        """Fold one piece's realized throughput into the moving averages (kept in logs:
        throughputs span orders of magnitude, and a log average is not dragged by one
        fast piece off a cache)."""
        if size_bytes <= 0 or cost_s <= 0:
            return
        value = math.log(size_bytes / cost_s)
        self.throughput_log_ewma = _ewma(self.throughput_log_ewma, self.throughput_samples, value)
        self.throughput_samples += 1
        average, samples = self.rack_throughput.get(child_rack, (0.0, 0))
        self.rack_throughput[child_rack] = (_ewma(average, samples, value), samples + 1)

    def recent_upload_bytes(self, now: float) -> float:
        """Bytes children reported from this host, decayed with ``UPLOAD_WINDOW_S``.

        At a steady upload rate ``r`` this settles at ``r x UPLOAD_WINDOW_S``.
        """
        if self._recent_upload_bytes == 0.0:
            return 0.0
        age_s = max(0.0, now - self._recent_upload_at_s)
        return self._recent_upload_bytes * math.exp(-age_s / UPLOAD_WINDOW_S)

    @property
    def rack_key(self) -> tuple[str, str]:
        # Rack names need only be unique within an idc.
        return (self.idc, self.rack)


def _ewma(average: float, samples: int, value: float) -> float:
    """The first sample sets the average; later ones move it by ``THROUGHPUT_EWMA_WEIGHT``."""
    if samples == 0:
        return value
    return average + THROUGHPUT_EWMA_WEIGHT * (value - average)


class Task:
    """One blob and the indices over its peers that sampling and the quota need."""

    __slots__ = (
        "task_id",
        "created_at_s",
        "size_bytes",
        "piece_bytes",
        "piece_count",
        "all_pieces_mask",
        "peers",
        "holders",
        "holders_by_idc",
        "holders_by_rack",
        "complete_peers",
        "rack_peers",
        "availability",
        "seed_peer_count",
        "normal_back_to_source_count",
        "piece_digests",
        "digest_sources",
        "import_claims",
        "origin_shares",
    )

    def __init__(self, task_id: str, size_bytes: int, piece_bytes: int, now: float) -> None:
        self.task_id = task_id
        self.created_at_s = now
        self.size_bytes = size_bytes
        self.piece_bytes = piece_bytes
        # Same rule as peer.pieces.PieceLayout.count: the last piece may be short.
        self.piece_count = -(-size_bytes // piece_bytes)
        self.all_pieces_mask = (1 << self.piece_count) - 1
        self.peers: dict[str, Peer] = {}
        # Peers holding at least one piece: the only ones worth sampling as parents.
        self.holders: RandomSet[Peer] = RandomSet()
        self.holders_by_idc: dict[str, RandomSet[Peer]] = {}
        self.holders_by_rack: dict[tuple[str, str], RandomSet[Peer]] = {}
        # Peers holding every piece: they can serve any child, whatever it lacks.
        self.complete_peers: RandomSet[Peer] = RandomSet()
        # Normal peers by rack, in registration order: the first few of a rack are its
        # gateways to other racks (SchedulerSettings.rack_gateways).
        self.rack_peers: dict[tuple[str, str], dict[str, Peer]] = {}
        # availability[i]: how many live peers hold piece i.
        self.availability = [0] * self.piece_count
        self.seed_peer_count = 0
        # Normal peers sent to the origin that have not failed or left: the quota in use.
        self.normal_back_to_source_count = 0
        # piece index -> trusted digest, from the first ok report of the piece whose bytes
        # came from the origin or a seed peer, and the id of the peer that reported it.
        self.piece_digests: dict[int, str] = {}
        self.digest_sources: dict[int, str] = {}
        # Which rack peer fetches which piece from other racks right now (claims).
        self.import_claims = RackClaims()
        # Which origin taker fetches which piece from the origin (origin shares).
        self.origin_shares = OriginShares()

    def normal_spread(self) -> list[int]:
        """Per piece, how many live normal (non-seed) peers hold it."""
        spread = list(self.availability)
        for peer in self.peers.values():
            if peer.host.is_seed:
                held = peer.pieces_mask
                while held:
                    lowest = held & -held
                    spread[lowest.bit_length() - 1] -= 1
                    held ^= lowest
        return spread

    def index_member(self, peer: Peer) -> None:
        host = peer.host
        if host.rack and not host.is_seed:
            self.rack_peers.setdefault(host.rack_key, {})[peer.peer_id] = peer

    def unindex_member(self, peer: Peer) -> None:
        members = self.rack_peers.get(peer.host.rack_key)
        if members is not None and members.pop(peer.peer_id, None) is not None and not members:
            del self.rack_peers[peer.host.rack_key]

    def rack_rank(self, peer: Peer, first: int) -> int | None:
        """``peer``'s place (from 0) among the normal peers of its rack in registration
        order, if it is one of the ``first`` of them; None otherwise."""
        for rank, peer_id in enumerate(self.rack_peers.get(peer.host.rack_key, ())):
            if rank >= first:
                return None
            if peer_id == peer.peer_id:
                return rank
        return None

    def is_rack_gateway(self, peer: Peer, gateways: int) -> bool:
        """Whether ``peer`` is among the first ``gateways`` normal peers of its rack."""
        if peer.host.rack_key not in self.rack_peers:
            return True
        return self.rack_rank(peer, gateways) is not None

    def index_holder(self, peer: Peer) -> None:
        host = peer.host
        self.holders.add(peer.peer_id, peer)
        self.holders_by_idc.setdefault(host.idc, RandomSet()).add(peer.peer_id, peer)
        self.holders_by_rack.setdefault(host.rack_key, RandomSet()).add(peer.peer_id, peer)

    def unindex_holder(self, peer: Peer) -> None:
        host = peer.host
        self.holders.discard(peer.peer_id)
        self.complete_peers.discard(peer.peer_id)
        _discard_from_group(self.holders_by_idc, host.idc, peer.peer_id)
        _discard_from_group(self.holders_by_rack, host.rack_key, peer.peer_id)


K = TypeVar("K")


def _discard_from_group(groups: dict[K, RandomSet[Peer]], key: K, peer_id: str) -> None:
    group = groups.get(key)
    if group is not None:
        group.discard(peer_id)
        if not group:
            # Empty groups are dropped so labels of departed hosts do not pile up.
            del groups[key]


@dataclass(eq=False, slots=True)
class Peer:
    """One host working on one task."""

    peer_id: str
    host: Host
    task: Task
    costs: PieceCostWindow
    registered_at_s: float
    state: PeerState = PeerState.PENDING
    # Bit i set: piece i is present. Python ints make "what does the child still need
    # from this parent" one C-level AND over a few machine words.
    pieces_mask: int = 0
    # Ordered by score, best first, as last handed out.
    parents: dict[str, Peer] = field(default_factory=dict)
    children: dict[str, Peer] = field(default_factory=dict)
    blocked_parent_ids: set[str] = field(default_factory=set)
    back_to_source: bool = False
    # Sent to the origin as a normal peer: holds one unit of the task's quota until it
    # fails or leaves (a seed's origin fetch never counts against the quota).
    holds_quota: bool = False
    # Took its share of the origin fetch (``scheduler.core.origin_shares``) and was handed
    # no more: from now on it gets parents like any peer, a seed too.
    took_origin_share: bool = False
    # Consecutive "retry later" answers since the last useful decision.
    retry_count: int = 0
    # When this peer last received a piece (or registered): whether it still moves.
    last_piece_at_s: float = 0.0
    # Pieces whose trusted digest this peer reported; they go if the peer fails.
    digest_pieces: list[int] = field(default_factory=list)

    @property
    def finished_piece_count(self) -> int:
        return self.pieces_mask.bit_count()

    @property
    def has_free_upload_slot(self) -> bool:
        """Fewer children on this task than its host's ``upload_slots``.

        Slots count per task, not per host: a host working on several blobs at once
        (containerd pulls three layers at a time) would otherwise spend its slots on
        children of one blob that have nothing to fetch from it right now, and turn
        away children of another blob it could serve. The piece server still bounds
        the uploads that actually run at once, per host.
        """
        return len(self.children) < self.host.upload_slots

    @property
    def is_complete(self) -> bool:
        return self.task.piece_count > 0 and self.pieces_mask == self.task.all_pieces_mask
