"""The pure scheduler core: cluster state, candidate filtering, evaluators, quota.

No I/O, clock or global randomness: time comes in as ``now`` (seconds, any monotonic
origin) and randomness as a ``random.Random``. The ``p2p-scheduler`` service and the
``p2psim`` simulator both drive it through ``SchedulerState``::

    state = SchedulerState(SchedulerSettings(), RuleEvaluator())
    state.announce_host(HostAnnounced(...), now)
    state.register_peer(PeerRegistered(...), now)
    decision = state.schedule(peer_id, now, rng)   # Parents | BackToSource | RetryLater
    state.report_pieces(PiecesReported(peer_id, (PieceReport(...), ...)), now)
    state.task_piece_digests(task_id)              # trusted piece digests, by index
    state.finish_peer(peer_id)                     # or fail_peer / remove_peer
"""

from scheduler.core.decisions import (
    BackToSource,
    Decision,
    DecisionReason,
    FilterReason,
    ParentChoice,
    Parents,
    Rejection,
    Removal,
    RetryLater,
    Stripe,
)
from scheduler.core.errors import (
    ConflictError,
    DigestConflictError,
    InvalidEventError,
    PeerStateError,
    SchedulerError,
    UnknownHostError,
    UnknownPeerError,
)
from scheduler.core.evaluator import Evaluator, RuleEvaluator, RuleTerms, RuleWeights
from scheduler.core.events import (
    Event,
    HostAnnounced,
    HostExpired,
    ParentReported,
    PeerFailed,
    PeerFinished,
    PeerLeft,
    PeerRegistered,
    PieceReport,
    PiecesReported,
)
from scheduler.core.model import Host, Peer, PeerState, Task
from scheduler.core.settings import SchedulerSettings
from scheduler.core.state import SchedulerState

__all__ = [
    "BackToSource",
    "ConflictError",
    "Decision",
    "DecisionReason",
    "DigestConflictError",
    "Evaluator",
    "Event",
    "FilterReason",
    "Host",
    "HostAnnounced",
    "HostExpired",
    "InvalidEventError",
    "ParentChoice",
    "ParentReported",
    "Parents",
    "Peer",
    "PeerFailed",
    "PeerFinished",
    "PeerLeft",
    "PeerRegistered",
    "PeerState",
    "PeerStateError",
    "PieceReport",
    "PiecesReported",
    "Rejection",
    "Removal",
    "RetryLater",
    "RuleEvaluator",
    "RuleTerms",
    "RuleWeights",
    "SchedulerError",
    "SchedulerSettings",
    "SchedulerState",
    "Stripe",
    "Task",
    "UnknownHostError",
    "UnknownPeerError",
]
