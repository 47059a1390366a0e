"""What the learned evaluator knows about one candidate parent for one child: a feature row.

Every feature is something the scheduler itself observed: what hosts announced (capacity,
load, topology labels), the upload slots it handed out, the pieces children reported
(and how fast they came), the peers' progress. Nothing comes from a simulator's truth, so
a model trained on simulated records reads the same features in a real cluster.

The set is versioned. A model records the ``FEATURE_VERSION`` it was trained on and the
learned evaluator refuses a model of another version: columns that moved or changed
meaning would silently score garbage. Change a feature, add one or reorder them, and the
version goes up.

``feature_matrix`` builds all rows of one decision as one numpy array, so the model runs
once per decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scheduler.core.evaluator import (
    bandwidth_duration,
    bandwidth_headroom,
    concurrency,
    location_affinity,
)
from scheduler.core.model import Peer, PeerState

FEATURE_VERSION = "starling-features-1"
# Column order of ``feature_matrix``; part of the feature version.
FEATURE_NAMES: tuple[str, ...] = (
    # Announced capacities, in Gbps, and the parent's upload against the child's download.
    "parent_upload_capacity_gbps",
    "child_download_capacity_gbps",
    "capacity_ratio",
    # The rule evaluator's load terms, in [0, 1] (scheduler.core.evaluator).
    "parent_bandwidth_headroom",
    "parent_bandwidth_duration",
    "parent_concurrency",
    # Upload counts: announced by the host, handed out by the scheduler (all tasks, and
    # this task's children of the parent), and the share of its slots still free.
    "parent_announced_upload_count",
    "parent_host_children",
    "parent_task_children",
    "parent_free_slot_share",
    # Realized throughput from the parent, ln(bytes/s) moving averages: overall and to
    # the child's rack (0 with no sample), their sample counts (capped), and the overall
    # average against the announced upload capacity (a straggler announces more than it
    # delivers).
    "parent_throughput_log",
    "parent_throughput_samples",
    "parent_to_rack_throughput_log",
    "parent_to_rack_samples",
    "parent_realized_capacity_share",
    # Topology affinity.
    "same_rack",
    "same_idc",
    "location_affinity",
    # Progress: the parent's and the child's shares of the blob, what the parent holds
    # that the child lacks (count, and share of what the child lacks).
    "parent_progress",
    "child_progress",
    "needed_pieces",
    "needed_pieces_share",
    # What the parent is.
    "parent_is_seed",
    "parent_complete",
    "is_current_parent",
    "parent_failure_share",
    # The task: age, holders, complete peers.
    "task_age_s",
    "task_holders",
    "task_complete_peers",
)
FEATURE_COUNT = len(FEATURE_NAMES)
GBPS = 1e9 / 8  # bytes per second in a gigabit per second
# Sample counts saturate here: past a few dozen pieces the average is as good as it gets.
SAMPLES_CAP = 64


def feature_row(child: Peer, parent: Peer, now: float) -> list[float]:
    """The features of ``parent`` for ``child``, in ``FEATURE_NAMES`` order."""
    host, child_host, task = parent.host, child.host, child.task
    up_bps = host.upload_capacity_bps
    down_bps = child_host.download_capacity_bps
    piece_count = max(1, task.piece_count)
    lacking = task.all_pieces_mask & ~child.pieces_mask
    needed = (parent.pieces_mask & lacking).bit_count()
    rack_log, rack_samples = host.rack_throughput.get(child_host.rack_key, (0.0, 0))
    throughput_log = host.throughput_log_ewma if host.throughput_samples else 0.0
    realized_share = (
        math.exp(throughput_log) / up_bps if host.throughput_samples and up_bps > 0 else 0.0
    )
    uploads = host.upload_ok_count + host.upload_failed_count
    slots = host.upload_slots
    return [
        up_bps / GBPS,
        down_bps / GBPS,
        up_bps / down_bps if down_bps > 0 else 0.0,
        bandwidth_headroom(host),
        bandwidth_duration(host, now),
        concurrency(host),
        float(host.announced_upload_count),
        float(host.children_count),
        float(len(parent.children)),
        max(0.0, 1.0 - len(parent.children) / slots) if slots > 0 else 0.0,
        throughput_log,
        float(min(host.throughput_samples, SAMPLES_CAP)),
        rack_log if rack_samples else 0.0,
        float(min(rack_samples, SAMPLES_CAP)),
        min(realized_share, 10.0),
        float(bool(host.rack) and host.rack_key == child_host.rack_key),
        float(bool(host.idc) and host.idc == child_host.idc),
        location_affinity(host.location, child_host.location),
        parent.finished_piece_count / piece_count,
        child.finished_piece_count / piece_count,
        float(needed),
        needed / max(1, lacking.bit_count()),
        float(host.is_seed),
        float(parent.state is PeerState.SUCCEEDED or parent.is_complete),
        float(parent.peer_id in child.parents),
        host.upload_failed_count / uploads if uploads else 0.0,
        max(0.0, now - task.created_at_s),
        float(len(task.holders)),
        float(len(task.complete_peers)),
    ]


def feature_matrix(child: Peer, candidates: Sequence[Peer], now: float) -> np.ndarray:
    """One row per candidate, ``FEATURE_COUNT`` float64 columns."""
    rows = [feature_row(child, parent, now) for parent in candidates]
    if not rows:
        return np.zeros((0, FEATURE_COUNT))
    return np.array(rows, dtype=np.float64)
