"""Scheduled retraining's decision: fit a candidate on older records, and keep it only if
it beats the current model on the newest ones.

Split by time, not by record: the newest ``held_out_share`` of the records, in the order
the store keeps them (the order they arrived), are held out, and the candidate is fitted
on the rest. A promotion answers "will the candidate predict what comes next better than
the model in use?", and the newest records are the nearest stand-in for what comes next.
A random split by record would leak: records of one decision, one host pair and one
minute are near copies of each other. Records of a decision that straddles the cut are
all held out, so no decision is on both sides. (``train.split_clusters`` holds out whole
clusters instead; a scheduler's own records usually come from one cluster.)

Score: the root mean squared error of ln piece throughput on the held-out records, the
target the model predicts and the same score as ``p2pctl model train --current``. Lower
is better, and the candidate must be strictly lower to be promoted. Without a current
model (the scheduler scores with the rule evaluator and nothing was published), or with
one of another feature version (it cannot be served anyway), the bar is a constant: the
mean of the fitted records. A model that cannot beat a constant is not worth serving.

Runs in a process of its own (``scheduler.service.retraining``): fitting is seconds of
CPU that must not share the scheduler's event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from scheduler.core.learned import ModelMismatchError, check_model
from scheduler.core.tree_model import TreeEnsemble, from_json
from scheduler.learning.dataset import Dataset
from scheduler.learning.train import (
    HELD_OUT_SHARE,
    MIN_RECORDS,
    PARAMS,
    TrainingError,
    evaluate,
    export,
)

# The name of the bar when there is no usable current model.
MEAN_ONLY = "mean"


@dataclass(frozen=True)
class Comparison:
    """A candidate and the current model, scored on the same held-out records."""

    candidate: TreeEnsemble
    candidate_rmse: float
    current_version: str  # the current model's version, or MEAN_ONLY
    current_rmse: float
    fit_records: int
    held_out_records: int

    @property
    def promote(self) -> bool:
        return self.candidate_rmse < self.current_rmse


def split_by_time(dataset: Dataset, held_out_share: float = HELD_OUT_SHARE) -> np.ndarray:
    """A mask of the held-out records: the newest share, whole decisions."""
    count = len(dataset)
    cut = count - max(1, round(count * held_out_share))
    held = np.zeros(count, dtype=bool)
    held[cut:] = True
    straddling = set(dataset.decisions[cut:].tolist())
    held |= np.fromiter((d in straddling for d in dataset.decisions), dtype=bool, count=count)
    return held


def fit(dataset: Dataset, metadata: dict[str, Any], threads: int = 1) -> TreeEnsemble:
    """The model ``train`` would fit, on all of ``dataset``, exported for serving.

    On ``threads`` cores (OpenMP): one by default, so a scheduler retraining on a schedule
    leaves the other cores to scheduling. On a busy machine one thread is also faster
    than several fighting over the cores.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    estimator = HistGradientBoostingRegressor(**PARAMS)
    with threadpool_limits(limits=threads):
        estimator.fit(dataset.features, dataset.target)
    model = export(estimator, metadata)
    sample = dataset.features[:500]
    drift = float(np.max(np.abs(model.predict(sample) - estimator.predict(sample))))
    if drift > 1e-6:
        raise TrainingError(f"exported trees differ from scikit-learn's by {drift}")
    # Once through its own document: the version is then the one every reader computes
    # (parsing normalizes fields of leaves that scikit-learn leaves arbitrary).
    return from_json(model.to_json())


def retrain(
    dataset: Dataset,
    current: TreeEnsemble | None,
    held_out_share: float = HELD_OUT_SHARE,
    trained_at: str = "",
) -> Comparison:
    """Fit a candidate on the older records; score it and ``current`` on the newest."""
    from sklearn import __version__ as sklearn_version

    if len(dataset) < MIN_RECORDS:
        raise TrainingError(f"{len(dataset)} usable records; at least {MIN_RECORDS} needed")
    held = split_by_time(dataset, held_out_share)
    if held.all() or not held.any():
        raise TrainingError("the split left no training or no held-out records")
    fit_data, test = dataset.subset(~held), dataset.subset(held)
    candidate = fit(
        fit_data,
        {
            "trained_at": trained_at,
            "trainer": f"scikit-learn {sklearn_version} HistGradientBoostingRegressor",
            "params": PARAMS,
            "split_by": "time",
        },
    )
    candidate_scores = evaluate(candidate, test)
    if current is not None and _servable(current):
        current_version, current_rmse = current.version, float(evaluate(current, test)["rmse"])
    else:
        mean = float(np.mean(fit_data.target))
        current_version = MEAN_ONLY
        current_rmse = math.sqrt(float(np.mean((test.target - mean) ** 2)))
    metrics = {
        "split_by": "time",
        "train": {**fit_data.summary(), **evaluate(candidate, fit_data)},
        "held_out": {**test.summary(), **candidate_scores},
        "compared_with": {"version": current_version, "held_out_rmse": current_rmse},
    }
    document = candidate.to_json()
    document["metadata"] = {**document["metadata"], "metrics": metrics}
    return Comparison(
        from_json(document),
        float(candidate_scores["rmse"]),
        current_version,
        current_rmse,
        len(fit_data),
        len(test),
    )


def _servable(model: TreeEnsemble) -> bool:
    try:
        check_model(model)
    except ModelMismatchError:
        return False
    return True
