"""Fit the learned evaluator's model from transfer records, split by cluster.

The model: scikit-learn's ``HistGradientBoostingRegressor`` predicting ``ln`` of a
piece's throughput from the parent's features at decision time. Why this one:

- the features mix scales and kinds (Gbps, counts, shares, flags, seconds); trees need
  no scaling and are indifferent to monotone transforms of a feature;
- the interactions that matter are conditional (a rack-local parent is good unless its
  upload is saturated; announced capacity means little once realized throughput has been
  seen), which boosted trees pick up and a linear model does not;
- it trains on 10^5-10^6 records in seconds on two cores, handles missing values, and a
  few hundred shallow trees export to plain arrays that score a decision in tens of
  microseconds without scikit-learn (``scheduler.core.tree_model``);
- the log target makes the least-squares fit a fit of geometric-mean throughput, so one
  piece that stalled behind a busy link does not dominate, and the scores rank candidates
  the way the rule evaluator's do: higher is better.

A learning-to-rank objective would match the use (ranking a decision's candidates) more
directly, but scikit-learn has none, and the regression also gives a calibrated
throughput that the metrics below can check.

Split: whole clusters (a simulated scenario and seed, or a real cluster's name) are held
out, never records. Records of one cluster share hosts, links and moments in time; a
random split by record would let the model memorize a host's speed and look better
than it will on a cluster it has not seen. With a single cluster, child hosts are held
out instead, and the metrics say so.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from scheduler.core.features import FEATURE_NAMES, FEATURE_VERSION
from scheduler.core.tree_model import TreeEnsemble, from_json
from scheduler.learning.dataset import Dataset

TARGET = "ln_piece_throughput_bps"
HELD_OUT_SHARE = 0.25
PARAMS: dict[str, Any] = {
    "loss": "squared_error",
    "learning_rate": 0.1,
    "max_iter": 120,
    "max_depth": 6,
    "max_leaf_nodes": 24,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
    "random_state": 0,
}
# Below this many records a model learns noise; training refuses.
MIN_RECORDS = 200


class TrainingError(Exception):
    pass


@dataclass(frozen=True)
class TrainingResult:
    model: TreeEnsemble
    metrics: dict[str, Any]


def split_clusters(dataset: Dataset, seed: int = 0) -> tuple[np.ndarray, str]:
    """A mask of the held-out records, and what was held out ("clusters" or "hosts")."""
    clusters = sorted(set(dataset.clusters.tolist()))
    if len(clusters) >= 2:
        random.Random(seed).shuffle(clusters)
        held = set(clusters[: max(1, round(len(clusters) * HELD_OUT_SHARE))])
        return np.array([c in held for c in dataset.clusters], dtype=bool), "clusters"
    # One cluster: hold out child hosts (the child peer id's host part is in decisions).
    children = sorted({d.split("\x00")[1] for d in dataset.decisions})
    random.Random(seed).shuffle(children)
    held = set(children[: max(1, round(len(children) * HELD_OUT_SHARE))])
    return np.array([d.split("\x00")[1] in held for d in dataset.decisions], dtype=bool), "hosts"


def train(dataset: Dataset, seed: int = 0, trained_at: str = "") -> TrainingResult:
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import HistGradientBoostingRegressor

    if len(dataset) < MIN_RECORDS:
        raise TrainingError(f"{len(dataset)} usable records; at least {MIN_RECORDS} needed")
    held_out, split_by = split_clusters(dataset, seed)
    if held_out.all() or not held_out.any():
        raise TrainingError("the split left no training or no held-out records")
    fit, test = dataset.subset(~held_out), dataset.subset(held_out)
    estimator = HistGradientBoostingRegressor(**PARAMS)
    estimator.fit(fit.features, fit.target)
    model = export(
        estimator,
        metadata={
            "trained_at": trained_at,
            "trainer": f"scikit-learn {sklearn_version} HistGradientBoostingRegressor",
            "params": PARAMS,
            "split_by": split_by,
        },
    )
    # The exported trees must predict what scikit-learn predicts, or serving drifts.
    sample = test.features[:500]
    drift = float(np.max(np.abs(model.predict(sample) - estimator.predict(sample))))
    if drift > 1e-6:
        raise TrainingError(f"exported trees differ from scikit-learn's by {drift}")
    metrics = {
        "split_by": split_by,
        "train": {**fit.summary(), **evaluate(model, fit)},
        "held_out": {**test.summary(), **evaluate(model, test)},
        "iterations": int(estimator.n_iter_),
    }
    document = model.to_json()
    document["metadata"] = {**document["metadata"], "metrics": metrics}
    return TrainingResult(from_json(document), metrics)


def export(estimator: Any, metadata: dict[str, Any]) -> TreeEnsemble:
    """scikit-learn's fitted trees as a ``TreeEnsemble`` document, then parsed back."""
    trees = []
    for (predictor,) in estimator._predictors:
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"]):
            raise TrainingError("categorical splits are not exported")
        leaf = nodes["is_leaf"].astype(bool).tolist()

        def inner(column: str, at_leaf: float, nodes: Any = nodes, leaf: list[bool] = leaf) -> Any:
            return [
                at_leaf if lf else x for x, lf in zip(nodes[column].tolist(), leaf, strict=True)
            ]

        trees.append(
            {
                "feature": inner("feature_idx", 0),
                "threshold": inner("num_threshold", 0.0),
                "missing_left": [bool(m) for m in nodes["missing_go_to_left"].tolist()],
                "left": inner("left", -1),
                "right": inner("right", -1),
                "value": [
                    float(v) if lf else 0.0
                    for v, lf in zip(nodes["value"].tolist(), leaf, strict=True)
                ],
            }
        )
    document = {
        "format": "starling-tree-ensemble",
        "format_version": 1,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "target": TARGET,
        "baseline": float(np.ravel(estimator._baseline_prediction)[0]),
        "trees": trees,
        "metadata": metadata,
    }
    return from_json(document)


def evaluate(model: TreeEnsemble, data: Dataset) -> dict[str, Any]:
    """Fit and ranking quality on ``data``.

    ``rmse`` and ``r2`` of the log throughput (``rmse_mean_only``: predicting the mean of
    ``data`` for every record, the floor to beat). ``pairwise_accuracy``: over the
    decisions in ``data``, pairs of parents handed out together whose realized mean log
    throughput differs by more than 10%, the share the model orders right;
    ``rule_pairwise_accuracy`` is the same for the scores the rule evaluator gave them
    (only on records a rule evaluator chose).
    """
    if not len(data):
        return {}
    predicted = model.predict(data.features)
    error = predicted - data.target
    variance = float(np.var(data.target))
    rmse = math.sqrt(float(np.mean(error**2)))
    return {
        "rmse": rmse,
        "rmse_mean_only": math.sqrt(variance),
        "r2": 1.0 - rmse**2 / variance if variance > 0 else math.nan,
        "pairwise_accuracy": _pairwise(data, predicted),
        "rule_pairwise_accuracy": _pairwise(data, data.rule_scores),
    }


def _pairwise(data: Dataset, scores: np.ndarray) -> float | None:
    # decision -> parent (its score, as the first record saw it) -> realized targets
    groups: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    first_score: dict[tuple[str, int], float] = {}
    for i, decision in enumerate(data.decisions):
        # Records of one parent in one decision share a snapshot, hence a feature row.
        key = hash(data.features[i].tobytes())
        groups[decision][key].append(float(data.target[i]))
        first_score.setdefault((decision, key), float(scores[i]))
    right = total = 0
    for decision, parents in groups.items():
        items = [(first_score[(decision, k)], float(np.mean(v))) for k, v in parents.items()]
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                (score_a, real_a), (score_b, real_b) = items[a], items[b]
                if abs(real_a - real_b) < math.log(1.1) or math.isnan(score_a + score_b):
                    continue
                if score_a == score_b:
                    continue
                total += 1
                right += (score_a > score_b) == (real_a > real_b)
    return right / total if total else None
