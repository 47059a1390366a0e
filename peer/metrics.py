"""Prometheus metrics of one peer daemon, on a registry of its own.

A registry per daemon (not the global one) lets several peers live in one process,
as they do in tests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class PeerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.download_bytes = Counter(
            "p2p_peer_download_bytes",
            "Blob bytes this peer downloaded, by source (origin, peer, seed).",
            ["source"],
            registry=r,
        )
        self.served_bytes = Counter(
            "p2p_peer_served_bytes",
            "Blob bytes sent to clients of the registry mirror.",
            registry=r,
        )
        self.blob_requests = Counter(
            "p2p_peer_blob_requests",
            "Blob GETs on the mirror by how they were served "
            "(hit: from the cache, miss: started a download, joined: an ongoing download, "
            "error: not served).",
            ["result"],
            registry=r,
        )
        self.tasks_active = Gauge(
            "p2p_peer_tasks_active", "Blob downloads in progress.", registry=r
        )
        self.task_results = Counter(
            "p2p_peer_tasks", "Finished blob downloads by result.", ["result"], registry=r
        )
        self.cache_bytes = Gauge(
            "p2p_peer_cache_bytes", "Bytes of complete blobs in the cache.", registry=r
        )
        self.cache_blobs = Gauge("p2p_peer_cache_blobs", "Complete blobs in the cache.", registry=r)
        self.cache_evictions = Counter(
            "p2p_peer_cache_evictions", "Blobs evicted to stay under the quota.", registry=r
        )
        self.time_to_first_byte = Histogram(
            "p2p_peer_time_to_first_byte_seconds",
            "From a blob GET to the first body byte sent.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.blob_download_duration = Histogram(
            "p2p_peer_blob_download_duration_seconds",
            "Duration of complete blob downloads.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.upload_bytes = Counter(
            "p2p_peer_upload_bytes", "Piece bytes sent to other peers.", registry=r
        )
        self.uploads_active = Gauge(
            "p2p_peer_uploads_active", "Piece uploads in progress.", registry=r
        )
        self.upload_rejected = Counter(
            "p2p_peer_upload_rejected",
            "Piece requests refused because every upload slot was busy.",
            registry=r,
        )
        self.parent_failures = Counter(
            "p2p_peer_parent_failures",
            "Pieces a parent failed to deliver, by reason.",
            ["reason"],
            registry=r,
        )
        self.scheduler_unavailable = Counter(
            "p2p_peer_scheduler_unavailable",
            "Times the scheduler could not be reached and the peer went to the registry.",
            registry=r,
        )
        self.stalled_responses = Counter(
            "p2p_peer_stalled_responses",
            "Client responses ended short because no new verified byte came in time.",
            registry=r,
        )
