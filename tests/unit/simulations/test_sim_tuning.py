"""The tuned strategy (the rule with a weights file) and ``p2psim tune``, its grid search."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest

from scheduler.core import RuleEvaluator, RuleWeights
from simulations import cli
from simulations.evaluators import (
    DEFAULT_RULE_WEIGHTS_PATH,
    load_rule_weights,
    scheduler_for,
)
from simulations.report import simulate
from simulations.scenario import Scenario
from simulations.swarm import Swarm
from simulations.trace import mismatches, replay_core, trace_run
from simulations.training import TRAINING_DIR, TRAINING_SEEDS
from simulations.tuning import BUDGET_RUNS, GRID, WEIGHTS_FORMAT

TINY_YAML = "nodes: 8\nhosts_per_rack: 4\nlayers_mib: [2, 4]\n"
NEAR_RACK = RuleWeights(location_affinity=1.6, bandwidth_headroom=1.0, bandwidth_duration=0.0)


def _weights_file(tmp_path: Path, weights: RuleWeights, name: str = "w.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"weights": weights.to_json()}))
    return path


def test_the_tuned_strategy_is_the_rule_with_the_files_weights(tmp_path: Path) -> None:
    path = _weights_file(tmp_path, NEAR_RACK)
    swarm = Swarm(Scenario(nodes=3, layers_mib=(2.0,), strategy="tuned", rule_weights=str(path)))
    state = scheduler_for(swarm.scenario, random.Random(0), swarm.cluster, swarm.network)
    assert state is not None and isinstance(state.evaluator, RuleEvaluator)
    assert state.evaluator.weights == NEAR_RACK
    # No file named: the committed one, which p2psim tune wrote.
    default = Swarm(Scenario(nodes=3, layers_mib=(2.0,), strategy="tuned")).state
    assert default is not None and isinstance(default.evaluator, RuleEvaluator)
    assert default.evaluator.weights == load_rule_weights(DEFAULT_RULE_WEIGHTS_PATH)


def test_tuned_with_dragonflys_weights_runs_exactly_like_the_rule(tmp_path: Path) -> None:
    scenario = Scenario(name="w", nodes=24, hosts_per_rack=6, layers_mib=(4.0, 8.0), seed=3)
    rule = simulate(scenario)
    same = simulate(
        scenario.replace(strategy="tuned", rule_weights=str(_weights_file(tmp_path, RuleWeights())))
    )
    assert dataclasses.replace(same, strategy="rule") == rule


def test_a_tuned_run_replays_into_the_core_with_its_weights(tmp_path: Path) -> None:
    path = _weights_file(tmp_path, NEAR_RACK)
    scenario = Scenario(
        name="t", nodes=12, hosts_per_rack=4, layers_mib=(2.0, 6.0), strategy="tuned", seed=2
    )
    trace = trace_run(scenario.replace(rule_weights=str(path)))
    assert mismatches(replay_core(trace)) == []
    # The replay reads the weights file the trace names: other weights, other scores.
    _weights_file(tmp_path, RuleWeights())
    assert mismatches(replay_core(trace)) != []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"location_affinity": 1.0}', "'weights' object"),
        ('{"weights": {"concurrency": -1}}', "concurrency"),
        ('{"weights": {"rack": 1}}', "unknown rule weights"),
    ],
)
def test_a_bad_weights_file_is_refused_with_its_path(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_rule_weights(path)
    assert str(path) in str(info.value)
    # p2psim compare refuses it before running anything.
    argv = ["compare", "--nodes", "4", "--strategies", "tuned", "--rule-weights", str(path)]
    assert cli.main([*argv, "--no-progress"]) == 2


def test_tune_writes_the_best_of_its_candidates_as_a_weights_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario, out = tmp_path / "tiny.yaml", tmp_path / "tuned.json"
    scenario.write_text(TINY_YAML)
    argv = ["tune", "--scenario", str(scenario), "--seeds", "1,2", "--candidates", "2"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["format"] == WEIGHTS_FORMAT
    meta = data["metadata"]
    assert meta["command"].startswith("p2psim tune --scenario")
    assert meta["scenarios"] == ["tiny"] and meta["seeds"] == [1, 2]
    assert meta["budget"]["runs"] == 4 and meta["budget"]["candidates"] == 2
    candidates = meta["candidates"]
    assert [c["weights"] for c in candidates] == [w.to_json() for w in GRID[:2]]
    for candidate in candidates:
        ratios = [run["p99_over_bound"] for run in candidate["runs"]]
        assert [(r["scenario"], r["seed"]) for r in candidate["runs"]] == [("tiny", 1), ("tiny", 2)]
        assert all(0 < x < math.inf for x in ratios)
        assert candidate["score"] == pytest.approx(sum(ratios) / 2)
    best = min(range(2), key=lambda i: candidates[i]["score"])
    assert meta["best_candidate"] == best
    assert load_rule_weights(out) == GRID[best]


def test_tune_refuses_a_held_out_scenario(tmp_path: Path) -> None:
    held_out = TRAINING_DIR.parent / "oversubscribed.yaml"
    assert held_out.exists()
    argv = ["tune", "--scenario", str(held_out), "--out", str(tmp_path / "w.json")]
    assert cli.main(argv) == 2
    assert not (tmp_path / "w.json").exists()


def test_the_grid_starts_with_dragonfly_and_fills_the_budget() -> None:
    assert GRID[0] == RuleWeights()
    assert len(set(GRID)) == len(GRID)
    training = sorted(TRAINING_DIR.glob("*.yaml"))
    assert len(GRID) * len(training) * len(TRAINING_SEEDS) == BUDGET_RUNS


def test_the_committed_weights_came_from_the_full_search() -> None:
    data = json.loads(DEFAULT_RULE_WEIGHTS_PATH.read_text())
    meta = data["metadata"]
    assert meta["budget"]["runs"] == BUDGET_RUNS
    assert meta["seeds"] == list(TRAINING_SEEDS)
    assert meta["scenarios"] == sorted(p.stem for p in TRAINING_DIR.glob("*.yaml"))
    scores = [c["score"] for c in meta["candidates"]]
    assert scores[meta["best_candidate"]] == min(scores)
    assert load_rule_weights(DEFAULT_RULE_WEIGHTS_PATH) == RuleWeights.from_mapping(
        meta["candidates"][meta["best_candidate"]]["weights"]
    )
