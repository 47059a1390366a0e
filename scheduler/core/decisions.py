"""What ``SchedulerState.schedule`` answers, and why candidates were turned down.

Every outcome is a value: a peer with no parent yet gets ``RetryLater``, not an exception.
Reasons are enums with stable string values so the service can use them as metric labels.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias


class FilterReason(enum.StrEnum):
    """Why one sampled candidate cannot be a parent of this child (checked in this order)."""

    SELF = "self"
    SAME_HOST = "same_host"
    BLOCKED = "blocked"  # the child reported it failed or was slow
    BAD_PARENT = "bad_parent"  # its last piece cost was an outlier
    NOTHING_NEEDED = "nothing_needed"  # it holds no piece the child lacks
    # A normal peer in another rack, while the child's rack has its gateways (settings)
    # or its uplink is congested (rack_flow) and a rack-mate or seed peer will do
    OTHER_RACK = "other_rack"
    NO_UPLOAD_SLOT = "no_upload_slot"
    CYCLE = "cycle"  # it downloads, directly or not, from the child


class DecisionReason(enum.StrEnum):
    """Why a peer was sent to the origin or told to wait."""

    SEED_PEER = "seed_peer"  # seed peers fetch from the origin first
    # One of the first normal peers of its rack in the task: takes a share of the origin
    # fetch (``scheduler.core.origin_shares``); also a peer sent to take pieces whose
    # taker left.
    ORIGIN_SHARE = "origin_share"
    ALREADY_BACK_TO_SOURCE = "already_back_to_source"
    NO_SOURCE_IN_SWARM = "no_source_in_swarm"  # no seed and no pieces: within the quota
    GAVE_UP_WAITING = "gave_up_waiting"  # too many retries; past the quota
    SWARM_CANNOT_SERVE = "swarm_cannot_serve"  # the child blocked every holder; past the quota
    EMPTY_TASK = "empty_task"  # a zero-byte blob has no pieces to share
    WAITING_FOR_SEED = "waiting_for_seed"  # a seed peer exists but holds nothing yet
    WAITING_FOR_SOURCE = "waiting_for_source"  # the quota is in use; wait for their pieces
    NO_PARENT_YET = "no_parent_yet"  # peers hold pieces, but every candidate was filtered


@dataclass(frozen=True, slots=True)
class Rejection:
    peer_id: str
    reason: FilterReason


@dataclass(frozen=True, slots=True)
class ParentChoice:
    """One parent to fetch pieces from, with what the peer needs to connect to it."""

    peer_id: str
    host_id: str
    address: str
    piece_port: int
    score: float
    # A normal peer of another rack than the child's: see ``Stripe``.
    other_rack: bool = False


@dataclass(frozen=True, slots=True)
class Stripe:
    """The child's share of what its rack brings in from other racks: the pieces ``i``
    with ``i % count == index``. It asks parents marked ``other_rack`` for those only
    (unless that leaves it with nothing to fetch and nothing in flight) and gets the
    rest from its rack-mates, so each piece crosses into the rack about once instead of
    once per peer (``scheduler.core.stripes``)."""

    index: int
    count: int


@dataclass(frozen=True, slots=True)
class Parents:
    """Fetch from these parents, best first. Replaces the peer's previous parents."""

    parents: tuple[ParentChoice, ...]
    rejected: tuple[Rejection, ...] = ()
    stripe: Stripe | None = None


@dataclass(frozen=True, slots=True)
class BackToSource:
    """Fetch the blob from the origin registry.

    ``shared``: fetch only the pieces ``SchedulerState.take_origin_pieces`` hands out, a
    few at a time, and ask for parents once it hands out none
    (``scheduler.core.origin_shares``). Otherwise fetch every missing piece.
    """

    reason: DecisionReason
    rejected: tuple[Rejection, ...] = ()
    shared: bool = False


@dataclass(frozen=True, slots=True)
class RetryLater:
    """No parent can serve yet; ask again after ``after_s`` seconds.

    The peer has no scheduler-assigned parents until then; pieces already in flight
    may finish and be reported.
    """

    after_s: float
    reason: DecisionReason
    rejected: tuple[Rejection, ...] = ()


Decision: TypeAlias = Parents | BackToSource | RetryLater


@dataclass(frozen=True, slots=True)
class Removal:
    """What leaving, failing or host expiry took away.

    ``orphaned_peer_ids`` are live peers that lost a parent: the simulator (or a push-based
    service) may reschedule them at once instead of waiting for their next request.
    """

    removed_peer_ids: tuple[str, ...] = ()
    orphaned_peer_ids: tuple[str, ...] = ()
    removed_host_ids: tuple[str, ...] = ()
