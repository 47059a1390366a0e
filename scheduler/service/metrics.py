"""Prometheus metrics of one scheduler, on a registry of its own.

A registry per service (not the global one) lets several schedulers live in one process,
as they do in tests. Names follow ``p2p_scheduler_<what>_<unit>``; counters get the
``_total`` suffix from the client library. Labels are enums of the core or route
templates, never ids or free text, so their number stays small. Every enum value is
created up front at zero, so dashboards show 0 rather than "no data" and ``rate()`` sees
the first increase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.core import (
    BackToSource,
    Decision,
    DecisionReason,
    FilterReason,
    Parents,
    PiecesReported,
    SchedulerState,
)
from scheduler.service.wire import ACTION_BACK_TO_SOURCE, ACTION_PARENTS, ACTION_RETRY_LATER
from scheduler.service.writer import Counts

# Decisions are in-memory work plus a queue wait: well under a millisecond when healthy.
_DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
# One piece (4 MiB at the default size) from a parent on the same network takes a few
# milliseconds to a second; more than ten seconds means the parent or the link is sick.
_PIECE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# Where a reported piece came from: the registry, a normal peer, a seed peer.
PIECE_SOURCES = ("origin", "peer", "seed")
# Why a parent was blocked for a child: its piece cost was an outlier (the core's bad-parent
# rule), it failed a transfer, or the child gave up on it and said so.
EVICTION_SLOW_PIECE = "slow_piece"
EVICTION_FAILED_PIECE = "failed_piece"
EVICTION_REPORTED_BY_CHILD = "reported_by_child"
ACTIONS = (ACTION_PARENTS, ACTION_BACK_TO_SOURCE, ACTION_RETRY_LATER)


def piece_source(state: SchedulerState, parent_id: str | None) -> str:
    """The source label of a piece from ``parent_id``; read inside a writer operation.

    A parent that already left counts as a normal peer: whether it was a seed is gone
    with it.
    """
    if parent_id is None:
        return "origin"
    parent = state.peers.get(parent_id)
    return "seed" if parent is not None and parent.host.is_seed else "peer"


class SchedulerMetrics:
    def __init__(self, counts: Callable[[], Counts]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "p2p_scheduler_decisions",
            "Scheduling decisions by action (parents, back_to_source, retry_later).",
            ["action"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "p2p_scheduler_decision_latency_seconds",
            "From a request's arrival at the writer queue to its decision, queue wait included.",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.candidates_filtered = Counter(
            "p2p_scheduler_candidates_filtered",
            "Candidate parents turned down, by the first filter that refused them.",
            ["reason"],
            registry=r,
        )
        self.back_to_source = Counter(
            "p2p_scheduler_back_to_source_decisions",
            "Peers sent to the origin registry, by reason.",
            ["reason"],
            registry=r,
        )
        self.events = Counter(
            "p2p_scheduler_events",
            "Events applied to the scheduler state, by type.",
            ["type"],
            registry=r,
        )
        self.import_claims = Counter(
            "p2p_scheduler_import_claims",
            "Pieces rack peers claimed before fetching them from other racks, by outcome "
            "(granted; denied: a rack-mate is fetching it; in_rack: a rack-mate holds it "
            "and serves it instead).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("granted", "denied", "in_rack"):
            self.import_claims.labels(outcome)  # exported at 0 before the first claim
        self.origin_pieces = Counter(
            "p2p_scheduler_origin_pieces",
            "Pieces handed to peers taking a share of a blob's origin fetch (seeds and the "
            "first peers of each rack, scheduling.origin_sharers_per_rack).",
            registry=r,
        )
        self.piece_reports = Counter(
            "p2p_scheduler_piece_reports",
            "Piece transfers reported by peers, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.bad_requests = Counter(
            "p2p_scheduler_bad_requests",
            "Requests refused with a 4xx status, by route template and status.",
            ["route", "status"],
            registry=r,
        )
        self.hosts = Gauge(
            "p2p_scheduler_hosts", "Hosts that announced within the TTL.", registry=r
        )
        self.peers = Gauge("p2p_scheduler_peers", "Registered peers.", registry=r)
        self.tasks = Gauge(
            "p2p_scheduler_tasks", "Tasks (blobs) with at least one peer.", registry=r
        )
        self.congested_racks = Gauge(
            "p2p_scheduler_congested_racks",
            "Racks whose peers get pieces from other racks' peers over "
            "rack_congestion_ratio times slower than from rack-mates: their peers take "
            "parents inside the rack while any will do (candidates_filtered other_rack).",
            registry=r,
        )
        self.piece_cost = Histogram(
            "p2p_scheduler_piece_cost_seconds",
            "Piece transfer times peers reported, by source (origin, peer, seed).",
            ["source"],
            buckets=_PIECE_BUCKETS,
            registry=r,
        )
        self.piece_bytes = Counter(
            "p2p_scheduler_piece_bytes",
            "Bytes of pieces peers reported receiving, by source (origin, peer, seed).",
            ["source"],
            registry=r,
        )
        self.parent_evictions = Counter(
            "p2p_scheduler_parent_evictions",
            "Parents blocked for a child, by reason (slow_piece: a bad parent by piece "
            "cost; failed_piece: a failed transfer; reported_by_child: the child gave up).",
            ["reason"],
            registry=r,
        )
        # Read at scrape time from the writer's last snapshot; the state itself is only
        # ever touched by the writer.
        self.hosts.set_function(lambda: counts().hosts)
        self.peers.set_function(lambda: counts().peers)
        self.tasks.set_function(lambda: counts().tasks)
        self.congested_racks.set_function(lambda: counts().congested_racks)
        _zero(self.decisions, ACTIONS)
        _zero(self.candidates_filtered, [str(reason) for reason in FilterReason])
        # Every reason the core has, not only those it sends to the origin today.
        _zero(self.back_to_source, [str(reason) for reason in DecisionReason])
        _zero(self.piece_reports, ("ok", "failed"))
        _zero(self.piece_bytes, PIECE_SOURCES)
        self._piece_cost_by_source = {s: self.piece_cost.labels(s) for s in PIECE_SOURCES}
        _zero(
            self.parent_evictions,
            (EVICTION_SLOW_PIECE, EVICTION_FAILED_PIECE, EVICTION_REPORTED_BY_CHILD),
        )

    def count_decision(self, decision: Decision, latency_s: float) -> None:
        if isinstance(decision, Parents):
            action = ACTION_PARENTS
        elif isinstance(decision, BackToSource):
            action = ACTION_BACK_TO_SOURCE
            self.back_to_source.labels(str(decision.reason)).inc()
        else:
            action = ACTION_RETRY_LATER
        self.decisions.labels(action).inc()
        self.decision_latency.observe(latency_s)
        for rejection in decision.rejected:
            self.candidates_filtered.labels(str(rejection.reason)).inc()

    def count_reports(
        self, event: PiecesReported, sources: Sequence[str], newly_blocked: Iterable[str]
    ) -> None:
        """One applied batch of piece reports.

        ``sources`` has each report's :func:`piece_source`; ``newly_blocked`` the parents
        the batch blocked for the child, read before and after in the writer operation.
        """
        # Summed per batch: batches carry up to thousands of reports, and every
        # increment of a metric takes a lock.
        ok = 0
        bytes_by_source = dict.fromkeys(PIECE_SOURCES, 0)
        failed_parents = set()
        for report, source in zip(event.reports, sources, strict=True):
            if report.ok:
                ok += 1
                bytes_by_source[source] += report.size_bytes
                self._piece_cost_by_source[source].observe(report.cost_s)
            else:
                failed_parents.add(report.parent_id)
        if ok:
            self.piece_reports.labels("ok").inc(ok)
        if len(event.reports) > ok:
            self.piece_reports.labels("failed").inc(len(event.reports) - ok)
        for source, size_bytes in bytes_by_source.items():
            if size_bytes:
                self.piece_bytes.labels(source).inc(size_bytes)
        for parent_id in newly_blocked:
            reason = EVICTION_FAILED_PIECE if parent_id in failed_parents else EVICTION_SLOW_PIECE
            self.parent_evictions.labels(reason).inc()


def _zero(metric: Counter | Histogram, values: Iterable[str]) -> None:
    for value in values:
        metric.labels(value)
