"""Prometheus metrics of one scheduler, on a registry of its own.

A registry per service (not the global one) lets several schedulers live in one process,
as they do in tests. Names follow ``p2p_scheduler_<what>_<unit>``; counters get the
``_total`` suffix from the client library. Labels are enums of the core or route
templates, never ids or free text, so their number stays small.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.core import BackToSource, Decision, Parents
from scheduler.service.wire import ACTION_BACK_TO_SOURCE, ACTION_PARENTS, ACTION_RETRY_LATER
from scheduler.service.writer import Counts

# Decisions are in-memory work plus a queue wait: well under a millisecond when healthy.
_DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


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
        # Read at scrape time from the writer's last snapshot; the state itself is only
        # ever touched by the writer.
        self.hosts.set_function(lambda: counts().hosts)
        self.peers.set_function(lambda: counts().peers)
        self.tasks.set_function(lambda: counts().tasks)

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
