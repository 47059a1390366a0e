"""The simulated nodes and their peers: what each holds, wants and is doing.

A node pulls the image's layers; each layer is one peer (one host working on one blob),
in a ``Mode`` that says what it waits for. ``simulations.swarm`` drives them.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field

from scheduler.core import PieceReport
from simulations.topology import SimHost
from simulations.workload import Layer


class Mode(enum.Enum):
    ASKING = "asking"  # a request to the scheduler is on its way
    WAITING = "waiting"  # told to retry later
    PARENTS = "parents"
    ORIGIN = "origin"
    DONE = "done"


class SimPeer:
    __slots__ = (
        "peer_id",
        "node",
        "layer",
        "have_mask",
        "all_mask",
        "wanted_mask",
        "in_flight",
        "load",
        "parents",
        "mode",
        "last_progress_s",
        "last_ask_s",
        "busy_until",
        "busy_until_s",
        "poll_pending",
        "origin_queue",
        "sharing",
        "piece_count",
        "is_seed",
        "pending_reports",
        "report_due",
        "stripe",
        "other_racks",
        "stripe_keep",
        "held",
    )

    def __init__(self, node: SimNode, layer: Layer) -> None:
        self.peer_id = f"{node.host.host_id}/layer-{layer.index}"
        self.node = node
        self.layer = layer
        self.piece_count = layer.piece_count
        self.is_seed = node.host.is_seed
        self.have_mask = 0  # bit i: piece i present
        self.all_mask = (1 << layer.piece_count) - 1
        # Bit i: piece i neither present nor in flight.
        self.wanted_mask = self.all_mask
        self.in_flight: dict[int, str | None] = {}
        self.load: collections.Counter[str] = collections.Counter()
        self.parents: list[str] = []
        self.mode = Mode.ASKING
        self.last_progress_s = 0.0
        self.last_ask_s = 0.0
        self.busy_until: dict[str, float] = {}
        # The latest time in ``busy_until``: from then on no parent is left alone.
        self.busy_until_s = 0.0
        self.poll_pending = False
        self.origin_queue: list[int] = []  # reversed: the lowest piece is popped first
        # Taking a share of the origin fetch (scheduler.core.origin_shares): the origin
        # queue holds the pieces of its last take.
        self.sharing = False
        # Reports not sent to the scheduler yet, and whether a send is already queued.
        self.pending_reports: list[PieceReport] = []
        self.report_due = False
        # The scheduler's stripe (index, count), the parents in other racks and the mask
        # of the stripe's pieces: while the peer has a request in flight, it asks those
        # parents only for these pieces (peer.piece_picker), and only for pieces the
        # scheduler lets it claim (scheduler.core.claims).
        self.stripe: tuple[int, int] | None = None
        self.other_racks: frozenset[str] = frozenset()
        self.stripe_keep = self.all_mask
        # Pieces a rack-mate claimed (scheduler.core.claims) -> until when this peer
        # leaves them to rack-mates instead of asking other racks' parents.
        self.held: dict[int, float] = {}

    @property
    def have(self) -> set[int]:
        """The pieces present. Kept as the mask alone: a set per peer was the largest
        thing in memory, and touching it for every piece cost more than the rest of
        the peer's bookkeeping."""
        return set(indices(self.have_mask))

    @have.setter
    def have(self, pieces: set[int]) -> None:
        mask = 0
        for index in pieces:
            mask |= 1 << index
        self.have_mask = mask


@dataclass(eq=False, slots=True)
class SimNode:
    host: SimHost
    arrival_s: float
    next_layer: int = 0
    layers_done: int = 0
    done_at_s: float | None = None
    peers: list[SimPeer] = field(default_factory=list)


@dataclass(slots=True)
class Counters:
    registry_bytes: int = 0
    p2p_bytes: int = 0
    cross_rack_bytes: int = 0
    seed_bytes: int = 0  # bytes the seed peers fetched from the registry (part of registry_bytes)
    seed_upload_bytes: int = 0  # bytes the seed peers sent to other peers
    pieces: int = 0
    decisions: collections.Counter[str] = field(default_factory=collections.Counter)
    back_to_source_peers: int = 0


def indices(mask: int) -> list[int]:
    """The set bits of ``mask``, ascending."""
    indices = []
    while mask:
        lowest = mask & -mask
        indices.append(lowest.bit_length() - 1)
        mask ^= lowest
    return indices
