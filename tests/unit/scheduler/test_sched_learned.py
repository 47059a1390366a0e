"""Issue 5 in the core: features, the tree model, the learned evaluator, transfer records."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from scheduler.core import Parents, SchedulerError
from scheduler.core.features import FEATURE_COUNT, FEATURE_NAMES, FEATURE_VERSION, feature_row
from scheduler.core.learned import LearnedEvaluator, ModelMismatchError
from scheduler.core.transfers import RECORD_SCHEMA, TransferRecorder
from scheduler.core.tree_model import ModelFormatError, TreeEnsemble, from_json
from tests.unit.scheduler.swarm import PIECE_BYTES, PIECES, MiB, Swarm

COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _stump(feature: str, threshold: float, low: float, high: float, **extra: Any) -> TreeEnsemble:
    """One split: ``low`` when x[feature] <= threshold, else ``high``."""
    return from_json(
        {
            "format": "starling-tree-ensemble",
            "format_version": 1,
            "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES),
            "target": "ln_piece_throughput_bps",
            "baseline": 0.0,
            "trees": [
                {
                    "feature": [COLUMN[feature], 0, 0],
                    "threshold": [threshold, 0.0, 0.0],
                    "missing_left": [False, True, True],
                    "left": [1, -1, -1],
                    "right": [2, -1, -1],
                    "value": [0.0, low, high],
                }
            ],
            "metadata": {},
            **extra,
        }
    )


def _two_parents() -> Swarm:
    swarm = Swarm()
    swarm.peer("c", rack="r1", idc="dc1")
    swarm.full("near", rack="r1", idc="dc1")
    swarm.full("far", rack="r2", idc="dc1")
    return swarm


def test_features_are_what_the_scheduler_observed() -> None:
    swarm = _two_parents()
    child, near, far = (swarm.state.peers[p] for p in ("c", "near", "far"))
    row = feature_row(child, near, swarm.now)
    assert len(row) == FEATURE_COUNT
    assert row[COLUMN["same_rack"]] == 1.0
    assert feature_row(child, far, swarm.now)[COLUMN["same_rack"]] == 0.0
    assert row[COLUMN["needed_pieces"]] == PIECES
    assert row[COLUMN["needed_pieces_share"]] == 1.0
    assert row[COLUMN["parent_throughput_samples"]] == 0
    # A child of near's rack reports a piece from near: 4 MiB in 0.5 s.
    swarm.peer("c2", rack="r1", idc="dc1")
    swarm.report("c2", "near", [0], cost_s=0.5)
    row = feature_row(child, near, swarm.now)
    assert row[COLUMN["parent_throughput_log"]] == pytest.approx(math.log(PIECE_BYTES / 0.5))
    assert row[COLUMN["parent_to_rack_throughput_log"]] == pytest.approx(
        math.log(PIECE_BYTES / 0.5)
    )
    assert row[COLUMN["parent_to_rack_samples"]] == 1
    # The same parent seen from another rack: overall average yes, rack average no.
    far_child = swarm.peer("c3", rack="r2", idc="dc1")
    far_row = feature_row(far_child, near, swarm.now)
    assert far_row[COLUMN["parent_throughput_samples"]] == 1
    assert far_row[COLUMN["parent_to_rack_samples"]] == 0


def test_exported_trees_follow_their_splits_and_missing_values() -> None:
    model = _stump("same_rack", 0.5, low=1.0, high=3.0)
    rows = np.zeros((3, FEATURE_COUNT))
    rows[1, COLUMN["same_rack"]] = 1.0
    rows[2, COLUMN["same_rack"]] = math.nan  # missing_left is False: goes right
    assert model.predict(rows).tolist() == [1.0, 3.0, 3.0]
    assert from_json(model.to_json()).predict(rows).tolist() == [1.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="features"):
        model.predict(np.zeros((2, FEATURE_COUNT - 1)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"left": [0, -1, -1]}, "bad child"),  # a node pointing at itself would never end
        ({"left": [1, -1, -1], "right": [7, -1, -1]}, "bad child"),
        ({"feature": [999, 0, 0]}, "no such feature"),
        ({"value": [0.0, "1", 2.0]}, "finite number"),
        ({"threshold": [math.inf, 0.0, 0.0]}, "finite number"),
    ],
)
def test_malformed_model_documents_are_refused(change: dict[str, Any], message: str) -> None:
    document = _stump("same_rack", 0.5, 1.0, 3.0).to_json()
    document["trees"][0].update(change)
    with pytest.raises(ModelFormatError, match=message):
        from_json(document)


def test_learned_evaluator_ranks_by_the_model_in_one_call() -> None:
    swarm = _two_parents()
    swarm.state.evaluator = LearnedEvaluator(_stump("same_rack", 0.5, low=0.0, high=5.0))
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [(p.peer_id, p.score) for p in decision.parents] == [("near", 5.0), ("far", 0.0)]
    # The opposite model picks the opposite order: the scores do come from the model.
    swarm = _two_parents()
    swarm.state.evaluator = LearnedEvaluator(_stump("same_rack", 0.5, low=5.0, high=0.0))
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["far", "near"]


def test_a_model_of_another_feature_version_is_refused() -> None:
    model = _stump("same_rack", 0.5, 0.0, 1.0)
    with pytest.raises(ModelMismatchError, match="starling-features-0"):
        LearnedEvaluator(replace(model, feature_version="starling-features-0"))
    renamed = replace(model, feature_names=("x",) * FEATURE_COUNT)
    with pytest.raises(ModelMismatchError):
        LearnedEvaluator(renamed)
    assert issubclass(ModelMismatchError, SchedulerError)


class _NanModel:
    feature_version = FEATURE_VERSION
    feature_names = FEATURE_NAMES
    version = "nan"

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), math.nan)


def test_scores_that_are_not_numbers_fall_back_to_the_rule_evaluator() -> None:
    swarm = _two_parents()
    evaluator = LearnedEvaluator(_NanModel())
    swarm.state.evaluator = evaluator
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    # Rule scores: near and far differ only in nothing the rule sees (same idc), both 0.85.
    assert [p.score for p in decision.parents] == [pytest.approx(0.85)] * 2
    assert evaluator.fallbacks == 1


def test_exploration_shuffles_the_top_and_records_its_probability() -> None:
    swarm = Swarm()
    swarm.peer("c", rack="r1")
    for i in range(6):
        swarm.full(f"p{i}", rack="r1" if i == 0 else f"r{i + 1}")
    model = _stump("same_rack", 0.5, low=0.0, high=5.0)
    recorder = TransferRecorder("test")
    swarm.state.recorder = recorder
    picks = []
    for seed in range(40):
        evaluator = LearnedEvaluator(model, random.Random(seed), exploration=1.0, explore_top=6)
        swarm.state.evaluator = evaluator
        decision = swarm.schedule("c")
        assert isinstance(decision, Parents)
        picks.append({p.peer_id for p in decision.parents})
        assert evaluator.last_scoring is not None and evaluator.last_scoring.explored
    # Always exploring among all 6 with K=4: p0 (the model's favourite) is left out
    # about a third of the time; without exploration it never would be.
    left_out = sum("p0" not in chosen for chosen in picks)
    assert 5 <= left_out <= 25
    swarm.report("c", "p1", [0], cost_s=0.25)
    (record,) = [r.to_json() for r in recorder.drain()]
    assert record["explored"] is True
    assert record["propensity"] == pytest.approx(4 / 6)


def test_records_join_reports_with_the_snapshot_taken_at_decision_time() -> None:
    swarm = _two_parents()
    recorder = TransferRecorder("cluster-a")
    swarm.state.recorder = recorder
    child, near = swarm.state.peers["c"], swarm.state.peers["near"]
    before = feature_row(child, near, swarm.now)
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    # The decision itself changed near's load; the snapshot is from before it.
    assert feature_row(child, near, swarm.now) != before
    swarm.now = 3.0
    swarm.report("c", "near", [0, 1], cost_s=0.5)
    swarm.report("c", "far", [2], ok=False)
    swarm.report("c", None, [3])  # from the origin: nothing to join
    swarm.report("c", "never-handed-out", [4])
    records = [r.to_json() for r in recorder.drain()]
    assert recorder.drain() == []
    assert [(r["parent_peer"], r["piece_index"], r["ok"]) for r in records] == [
        ("near", 0, True),
        ("near", 1, True),
        ("far", 2, False),
    ]
    first = records[0]
    assert first["schema"] == RECORD_SCHEMA
    assert first["feature_version"] == FEATURE_VERSION
    assert first["features"] == before
    assert (first["cluster"], first["child_host"], first["parent_host"]) == (
        "cluster-a",
        "h-c",
        "h-near",
    )
    assert (first["at_s"], first["decided_at_s"]) == (3.0, 0.0)
    assert (first["evaluator"], first["rank"], first["propensity"]) == ("rule", 0, 1.0)
    assert first["piece_bytes"] == PIECE_BYTES and first["cost_s"] == 0.5
    assert recorder.unmatched == 1


def test_record_buffer_is_bounded_and_forgets_departed_children() -> None:
    swarm = _two_parents()
    recorder = TransferRecorder(max_pending=2)
    swarm.state.recorder = recorder
    swarm.schedule("c")
    swarm.report("c", "near", [0, 1, 2])
    assert (recorder.pending, recorder.dropped) == (2, 1)
    swarm.state.remove_peer("c")
    swarm.peer("c", rack="r1", idc="dc1")
    swarm.report("c", "near", [3])  # the old edges left with the old peer
    assert recorder.unmatched == 1


def test_throughput_averages_move_by_a_fifth_per_piece() -> None:
    swarm = _two_parents()
    host = swarm.state.hosts["h-near"]
    swarm.report("c", "near", [0], cost_s=1.0)
    swarm.report("c", "near", [1], cost_s=0.25)
    fast, slow = math.log(PIECE_BYTES / 0.25), math.log(PIECE_BYTES / 1.0)
    assert host.throughput_log_ewma == pytest.approx(slow + 0.2 * (fast - slow))
    assert host.throughput_samples == 2
    assert 4 * MiB == PIECE_BYTES
