"""Transfer records built so a model's held-out error is known in advance.

Each record's piece throughput follows the first feature: ``ln(bytes/s) = 16 + slope x
(2 x features[0] - 1)`` plus a little noise. A model fitted on ``slope = +2`` records is
close on them and about 2.3 off (RMSE of ln throughput) on ``slope = -2`` records, and the
other way round: the regimes that make a retraining round promote or reject for sure.

Imported as ``tests.unit.scheduler.synthetic_records`` by unit and integration tests.
"""

from __future__ import annotations

import functools
import math
import random
from typing import Any

from scheduler.core.features import FEATURE_COUNT, FEATURE_VERSION
from scheduler.core.transfers import RECORD_SCHEMA
from scheduler.core.tree_model import TreeEnsemble
from scheduler.learning.dataset import dataset_from_records

PIECE_BYTES = 4 * 1024 * 1024
UP = 2.0
DOWN = -2.0


def records(
    count: int, slope: float, *, first: int = 0, seed: int = 0, cluster: str = "synthetic"
) -> list[dict[str, Any]]:
    """``count`` records numbered from ``first`` (each its own decision)."""
    rng = random.Random(seed * 1_000_003 + first)
    out = []
    for n in range(first, first + count):
        features = [rng.random() for _ in range(FEATURE_COUNT)]
        ln_bps = 16.0 + slope * (2 * features[0] - 1) + rng.gauss(0, 0.05)
        out.append(
            {
                "schema": RECORD_SCHEMA,
                "feature_version": FEATURE_VERSION,
                "cluster": cluster,
                "at_s": float(n),
                "decided_at_s": float(n),
                "task_id": "sha256:" + "ab" * 32,
                "child_peer": f"child-{n % 8}",
                "child_host": f"host-{n % 8}",
                "parent_peer": f"parent-{n % 5}",
                "parent_host": f"phost-{n % 5}",
                "piece_index": n,
                "piece_bytes": PIECE_BYTES,
                "cost_s": PIECE_BYTES / math.exp(ln_bps),
                "ok": True,
                "evaluator": "rule",
                "score": 0.5,
                "rank": 0,
                "explored": False,
                "propensity": 1.0,
                "features": features,
            }
        )
    return out


@functools.cache
def model_of(slope: float, count: int = 600, seed: int = 99) -> TreeEnsemble:
    """A model fitted on ``count`` records of ``slope``: the "current" model of a test."""
    from scheduler.learning.retrain import fit

    return fit(dataset_from_records(records(count, slope, seed=seed)), {"note": f"slope {slope}"})
