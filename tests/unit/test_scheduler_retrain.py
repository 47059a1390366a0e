"""Scheduled retraining's decision (scheduler/learning/retrain.py) on records built so the
outcome is known: the newest records held out, promotion only when the candidate wins."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.learning.dataset import dataset_from_records
from scheduler.learning.retrain import MEAN_ONLY, retrain, split_by_time
from scheduler.learning.train import TrainingError
from tests.unit.scheduler.synthetic_records import DOWN, UP, model_of, records


def test_a_candidate_that_fits_the_newest_records_is_promoted() -> None:
    dataset = dataset_from_records(records(800, UP))
    comparison = retrain(dataset, model_of(DOWN))
    assert comparison.promote
    assert comparison.candidate_rmse < 0.3 < 1.5 < comparison.current_rmse
    assert (comparison.fit_records, comparison.held_out_records) == (600, 200)
    metrics = comparison.candidate.metadata["metrics"]
    assert metrics["split_by"] == "time"
    assert metrics["compared_with"]["version"] == model_of(DOWN).version


def test_a_candidate_fitted_on_an_older_regime_is_rejected() -> None:
    # The newest quarter (held out) follows the current model's regime, not the older one
    # the candidate is fitted on.
    dataset = dataset_from_records(records(600, UP) + records(200, DOWN, first=600))
    comparison = retrain(dataset, model_of(DOWN))
    assert not comparison.promote
    assert comparison.current_rmse < 0.3 < 1.5 < comparison.candidate_rmse


def test_without_a_current_model_the_bar_is_the_mean() -> None:
    comparison = retrain(dataset_from_records(records(400, UP)), None)
    assert comparison.current_version == MEAN_ONLY
    # The mean misses by the spread of the target (slope x 2 / sqrt(12), about 1.15).
    assert comparison.current_rmse > 1.0 and comparison.promote


def test_a_current_model_of_another_feature_version_counts_as_none() -> None:
    stale = replace(model_of(UP), feature_version="starling-features-0")
    comparison = retrain(dataset_from_records(records(400, UP)), stale)
    assert comparison.current_version == MEAN_ONLY


def test_the_newest_records_are_held_out_and_no_decision_is_split() -> None:
    rows = records(100, UP)
    # Records 70-79 all belong to one decision that straddles the cut at 75.
    for row in rows[70:80]:
        row["decided_at_s"], row["child_peer"] = 70.0, "straddler"
    held = split_by_time(dataset_from_records(rows), 0.25)
    assert held.tolist() == [False] * 70 + [True] * 30
    assert np.count_nonzero(held) == 30


def test_too_few_records_train_nothing() -> None:
    with pytest.raises(TrainingError, match="records"):
        retrain(dataset_from_records(records(50, UP)), None)
