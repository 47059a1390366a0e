"""Prometheus metrics of one peer daemon, on a registry of its own.

A registry per daemon (not the global one) lets several peers live in one process,
as they do in tests. Names follow ``p2p_peer_<what>_<unit>``; counters get the
``_total`` suffix from the client library. Every label value the daemon can produce is
created up front at zero, so a dashboard shows 0 for "nothing happened" instead of "no
data", and ``rate()`` sees the first increase.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# One piece (4 MiB at the default size) from a parent on the same network takes a few
# milliseconds to a second; more than ten seconds means the parent or the link is sick.
_PIECE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# Where downloaded bytes came from: the registry, a normal peer, a seed peer.
SOURCES = ("origin", "peer", "seed")
BLOB_REQUEST_RESULTS = ("hit", "miss", "joined", "error")
TASK_RESULTS = ("complete", "failed")
# Why the conductor gave up on a parent: ParentError reasons (peer/parent_client.py) but
# "busy", which only backs off, plus "corrupt" (a piece failed its digest). A
# status_<code> reason appears when a parent answers with an unexpected status.
PARENT_FAILURE_REASONS = ("unreachable", "short", "too_long", "local_write", "corrupt")
# How a piece-list request was answered (peer.piece_server).
PIECE_LIST_FORMS = ("stream", "long_poll", "at_once")


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
        self.back_to_source = Counter(
            "p2p_peer_back_to_source",
            "Downloads (or what was left of them) fetched from the registry: the scheduler "
            "said so, could not be reached, or there is no scheduler.",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "p2p_peer_cache_bytes", "Bytes of complete blobs in the cache.", registry=r
        )
        self.cache_quota_bytes = Gauge(
            "p2p_peer_cache_quota_bytes", "Most bytes of complete blobs kept.", registry=r
        )
        self.cache_blobs = Gauge("p2p_peer_cache_blobs", "Complete blobs in the cache.", registry=r)
        self.cache_evictions = Counter(
            "p2p_peer_cache_evictions", "Blobs evicted to stay under the quota.", registry=r
        )
        self.cache_evicted_bytes = Counter(
            "p2p_peer_cache_evicted_bytes", "Bytes of blobs evicted from the cache.", registry=r
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
        self.verified_bytes = Counter(
            "p2p_peer_blob_verified_bytes",
            "Bytes fed into blob digest checks, by where they were read: from memory as they "
            "arrived, or back from the task file (pieces that arrived far ahead of the check).",
            ["read_from"],
            registry=r,
        )
        self.piece_cost = Histogram(
            "p2p_peer_piece_cost_seconds",
            "Time to bring one piece in, by source (origin, peer, seed).",
            ["source"],
            buckets=_PIECE_BUCKETS,
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
        self.other_rack_bytes = Counter(
            "p2p_peer_other_rack_bytes",
            "Blob bytes from normal peers in other racks than this host's (the scheduler "
            "marks them; seed peers are in none). Against download_bytes{source=peer}: "
            "the share that crossed rack uplinks.",
            registry=r,
        )
        self.import_claims = Counter(
            "p2p_peer_import_claims",
            "Pieces this peer claimed at the scheduler before asking other racks' peers "
            "for them, by outcome: granted, denied (a rack-mate is fetching or holds it; "
            "this peer gets it from the rack-mate), unchecked (the scheduler did not answer).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("granted", "denied", "unchecked"):
            self.import_claims.labels(outcome)  # exported at 0 before the first claim
        self.stripe_fallbacks = Counter(
            "p2p_peer_stripe_fallbacks",
            "Times this peer's rack stripe left it with nothing to fetch and nothing in "
            "flight while other racks' parents had more, so it asked them for pieces "
            "outside its stripe.",
            registry=r,
        )
        self.piece_lists = Counter(
            "p2p_peer_piece_lists",
            "Piece-list requests from children, by how they were answered: a stream "
            "(a line per change), a long poll, or at once.",
            ["form"],
            registry=r,
        )
        self.parent_failures = Counter(
            "p2p_peer_parent_failures",
            "Parents this peer gave up on (and blocked at the scheduler), by reason.",
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
        for source in SOURCES:
            self.download_bytes.labels(source)
            self.piece_cost.labels(source)
        for result in BLOB_REQUEST_RESULTS:
            self.blob_requests.labels(result)
        for result in TASK_RESULTS:
            self.task_results.labels(result)
        for reason in PARENT_FAILURE_REASONS:
            self.parent_failures.labels(reason)
        for form in PIECE_LIST_FORMS:
            self.piece_lists.labels(form)
