"""Transfer records: each reported piece joined with what the scheduler saw when it chose
the parent. The training data of the learned evaluator.

When ``SchedulerState.schedule`` hands out parents, the recorder keeps a snapshot per
child -> parent edge: the parent's feature row (``scheduler.core.features``) as it was
before the decision took effect, the evaluator, the parent's score and rank, and the
propensity (the probability the policy hands that parent out; 1 for the deterministic
rule evaluator, from the learned evaluator's exploration otherwise, None when unknown).
When the child reports a piece from that parent, the report and the latest snapshot of
the edge become one ``TransferRecord``. Reports from the origin, and from parents the
scheduler never handed out, have no snapshot and are only counted (``unmatched``).

The recorder only buffers; the shell ``drain``s it and writes the records to a store
(files, or a Redis stream), the simulator to files. The buffer is bounded: past
``max_pending`` records nobody drained, new ones are dropped and counted, so a stuck
writer costs records, not memory.

Schema (``RECORD_SCHEMA``), one JSON object per record, as ``to_json`` writes it::

    schema, feature_version, cluster, at_s, decided_at_s, task_id,
    child_peer, child_host, parent_peer, parent_host,
    piece_index, piece_bytes, cost_s, ok,
    evaluator, score, rank, explored, propensity, features (list, FEATURE_NAMES order)

Times are the scheduler's clock (monotonic seconds in the service, simulated seconds in
p2psim): only differences mean anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scheduler.core.decisions import Parents
from scheduler.core.evaluator import Evaluator
from scheduler.core.events import PieceReport
from scheduler.core.features import FEATURE_VERSION, feature_row
from scheduler.core.learned import LearnedEvaluator
from scheduler.core.model import Peer

RECORD_SCHEMA = 1
DEFAULT_MAX_PENDING = 100_000


@dataclass(frozen=True, slots=True)
class EdgeSnapshot:
    parent_host: str
    decided_at_s: float
    evaluator: str
    score: float
    rank: int
    explored: bool
    propensity: float | None
    features: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class TransferRecord:
    cluster: str
    at_s: float
    task_id: str
    child_peer: str
    child_host: str
    parent_peer: str
    piece_index: int
    piece_bytes: int
    cost_s: float
    ok: bool
    snapshot: EdgeSnapshot

    def to_json(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "schema": RECORD_SCHEMA,
            "feature_version": FEATURE_VERSION,
            "cluster": self.cluster,
            "at_s": self.at_s,
            "decided_at_s": snap.decided_at_s,
            "task_id": self.task_id,
            "child_peer": self.child_peer,
            "child_host": self.child_host,
            "parent_peer": self.parent_peer,
            "parent_host": snap.parent_host,
            "piece_index": self.piece_index,
            "piece_bytes": self.piece_bytes,
            "cost_s": self.cost_s,
            "ok": self.ok,
            "evaluator": snap.evaluator,
            "score": snap.score if math.isfinite(snap.score) else None,
            "rank": snap.rank,
            "explored": snap.explored,
            "propensity": snap.propensity,
            "features": list(snap.features),
        }


class TransferRecorder:
    """Edge snapshots at decision time, joined with piece reports into records."""

    def __init__(self, cluster: str = "", max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.cluster = cluster
        self.max_pending = max_pending
        # child peer id -> parent peer id -> the latest snapshot of that edge.
        self._edges: dict[str, dict[str, EdgeSnapshot]] = {}
        self._pending: list[TransferRecord] = []
        self.recorded = 0
        self.dropped = 0
        self.unmatched = 0

    def on_parents(
        self,
        child: Peer,
        decision: Parents,
        parents: list[Peer],
        evaluator: Evaluator,
        now: float,
    ) -> None:
        """Snapshot each handed-out edge; call before the decision changes the state."""
        scoring = evaluator.last_scoring if isinstance(evaluator, LearnedEvaluator) else None
        if scoring is not None and scoring.child_id != child.peer_id:
            scoring = None
        rows = {pid: i for i, pid in enumerate(scoring.candidate_ids)} if scoring else {}
        edges = self._edges.setdefault(child.peer_id, {})
        for rank, (choice, parent) in enumerate(zip(decision.parents, parents, strict=True)):
            row = rows.get(parent.peer_id)
            propensity: float | None
            if scoring is not None and row is not None:
                features = tuple(float(x) for x in scoring.features[row])
                propensity = scoring.propensities[row]
                explored = scoring.explored
            else:
                features = tuple(feature_row(child, parent, now))
                propensity = 1.0 if evaluator.name == "rule" else None
                explored = False
            edges[parent.peer_id] = EdgeSnapshot(
                parent.host.host_id,
                now,
                evaluator.name,
                choice.score,
                rank,
                explored,
                propensity,
                features,
            )

    def on_report(self, child: Peer, report: PieceReport, now: float) -> None:
        if report.parent_id is None:
            return
        snapshot = self._edges.get(child.peer_id, {}).get(report.parent_id)
        if snapshot is None:
            self.unmatched += 1
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self.recorded += 1
        self._pending.append(
            TransferRecord(
                self.cluster,
                now,
                child.task.task_id,
                child.peer_id,
                child.host.host_id,
                report.parent_id,
                report.piece_index,
                report.size_bytes,
                report.cost_s,
                report.ok,
                snapshot,
            )
        )

    def forget(self, peer_id: str) -> None:
        """The child left or finished: its edges will report no more pieces."""
        self._edges.pop(peer_id, None)

    def drain(self) -> list[TransferRecord]:
        """The records since the last drain, oldest first."""
        pending, self._pending = self._pending, []
        return pending

    @property
    def pending(self) -> int:
        return len(self._pending)
