"""Transfer records read back for training: arrays, targets and the cluster of each.

Records are the JSON objects ``scheduler.core.transfers`` defines: lines in any number
of files under a directory (rotated files included, ``read_records``), or already parsed,
e.g. read from the scheduler's Redis stream (``dataset_from_records``). Lines cut short
by a crash, other schemas and other feature versions are skipped and counted, never
fatal: a records store collects over months and several scheduler versions.

Target: ``ln(piece_bytes / cost_s)``, the log throughput of the piece. A failed piece
delivered nothing; it gets the 1st percentile of the ok pieces' targets, so a parent
that fails ranks with the slowest, not off the scale.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.core.features import FEATURE_COUNT, FEATURE_VERSION
from scheduler.core.transfers import RECORD_SCHEMA

FAILED_TARGET_QUANTILE = 1.0


@dataclass
class Dataset:
    features: np.ndarray  # (records, FEATURE_COUNT)
    target: np.ndarray  # ln(bytes/s)
    clusters: np.ndarray  # (records,) cluster label of each record (str objects)
    decisions: np.ndarray  # (records,) one id per (cluster, child, decision time)
    rule_scores: np.ndarray  # the snapshot's score when a rule evaluator chose; NaN else
    ok: np.ndarray  # bool
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(
            self.features[mask],
            self.target[mask],
            self.clusters[mask],
            self.decisions[mask],
            self.rule_scores[mask],
            self.ok[mask],
            Counter(self.skipped),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "records": len(self),
            "failed": int((~self.ok).sum()),
            "clusters": sorted(set(self.clusters.tolist())),
            "target_ln_bps_quantiles": {
                str(q): float(np.percentile(self.target, q)) if len(self) else None
                for q in (1, 50, 99)
            },
            "skipped": dict(self.skipped),
        }


def record_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Every ``*.jsonl`` file (and rotated ``*.jsonl.N``) under ``directory``, sorted."""
    root = Path(directory)
    return sorted(p for p in root.rglob("*.jsonl*") if p.is_file() and ".partial" not in p.name)


def read_records(directory: str | os.PathLike[str]) -> Dataset:
    """The records in every record file under ``directory``."""
    torn: Counter[str] = Counter()

    def parsed() -> Iterator[Any]:
        for path in record_files(directory):
            with path.open() as fh:
                for line in fh:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        torn["torn_line"] += 1

    dataset = dataset_from_records(parsed())
    dataset.skipped.update(torn)
    return dataset


def dataset_from_records(records: Iterable[Any]) -> Dataset:
    """Records already parsed (from files, or a Redis stream), in the order they came."""
    rows: list[list[float]] = []
    targets: list[float] = []
    clusters: list[str] = []
    decisions: list[str] = []
    rule_scores: list[float] = []
    ok_flags: list[bool] = []
    skipped: Counter[str] = Counter()
    for record in records:
        reason = _unusable(record)
        if reason:
            skipped[reason] += 1
            continue
        ok = bool(record["ok"])
        cost_s, size = float(record["cost_s"]), int(record["piece_bytes"])
        targets.append(math.log(size / cost_s) if ok else math.nan)
        rows.append([float(x) for x in record["features"]])
        cluster = str(record.get("cluster", ""))
        clusters.append(cluster)
        decisions.append(f"{cluster}\x00{record['child_peer']}\x00{record['decided_at_s']!r}")
        score = record.get("score")
        rule_scores.append(
            float(score) if record.get("evaluator") == "rule" and score is not None else math.nan
        )
        ok_flags.append(ok)
    target = np.array(targets, dtype=np.float64)
    ok_mask = np.array(ok_flags, dtype=bool)
    if ok_mask.any():
        target[~ok_mask] = np.percentile(target[ok_mask], FAILED_TARGET_QUANTILE)
    return Dataset(
        np.array(rows, dtype=np.float64).reshape(len(rows), FEATURE_COUNT),
        target,
        np.array(clusters, dtype=object),
        np.array(decisions, dtype=object),
        np.array(rule_scores, dtype=np.float64),
        ok_mask,
        skipped,
    )


def _unusable(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not_an_object"
    if record.get("schema") != RECORD_SCHEMA:
        return "other_schema"
    if record.get("feature_version") != FEATURE_VERSION:
        return "other_feature_version"
    features = record.get("features")
    if not isinstance(features, list) or len(features) != FEATURE_COUNT:
        return "bad_features"
    try:
        cost_s, size = float(record["cost_s"]), int(record["piece_bytes"])
        record["child_peer"], record["decided_at_s"], record["ok"]
    except (KeyError, TypeError, ValueError):
        return "missing_field"
    if record["ok"] and not (cost_s > 0 and size > 0):
        return "no_throughput"
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in features):
        return "bad_features"
    return None
