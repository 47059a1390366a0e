"""The simulator loop of issue 5: records from simulated runs, training, serving the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctl.cli import main as p2pctl
from scheduler.core.features import FEATURE_COUNT, FEATURE_VERSION
from scheduler.core.learned import LearnedEvaluator
from scheduler.learning.artifact import load_model
from scheduler.learning.dataset import read_records
from scheduler.learning.train import TrainingError, export, split_clusters, train
from simulations.cli import main as p2psim
from simulations.records import simulate_recording
from simulations.report import simulate
from simulations.scenario import Scenario

SMALL = Scenario(
    name="tiny",
    nodes=24,
    hosts_per_rack=6,
    layers_mib=(6.0, 10.0),
    nic_mix_gbps=((10.0, 0.5), (25.0, 0.5)),
    straggler_fraction=0.1,
)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("records")
    for seed in (1, 2, 3):
        for strategy in ("rule", "random"):
            result, count = simulate_recording(
                SMALL.replace(seed=seed, strategy=strategy), directory
            )
            assert result.complete and count > 0
    return directory


def test_simulated_records_follow_the_schema_and_the_run(records_dir: Path) -> None:
    files = sorted(p.name for p in records_dir.iterdir())
    assert files == sorted(f"tiny-{s}-seed{n}.jsonl" for n in (1, 2, 3) for s in ("random", "rule"))
    lines = (records_dir / "tiny-rule-seed1.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["cluster"] for r in records} == {"sim/tiny/seed-1"}
    assert {r["evaluator"] for r in records} == {"rule"}
    assert all(r["feature_version"] == FEATURE_VERSION for r in records)
    assert all(len(r["features"]) == FEATURE_COUNT for r in records)
    assert all(r["cost_s"] > 0 and r["child_host"] != r["parent_host"] for r in records)
    # Peer-to-peer pieces only: every node got the image, mostly from other peers.
    pieces = sum(int(size // 4) for size in SMALL.layers_mib)
    assert len(records) > 0.5 * SMALL.nodes * pieces


def test_the_split_holds_out_whole_runs(records_dir: Path) -> None:
    dataset = read_records(records_dir)
    held_out, split_by = split_clusters(dataset)
    assert split_by == "clusters"
    held = set(dataset.clusters[held_out].tolist())
    kept = set(dataset.clusters[~held_out].tolist())
    assert held and kept and not held & kept


@pytest.fixture(scope="module")
def trained(records_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "model.json"
    assert p2pctl(["model", "train", "--records", str(records_dir), "--out", str(out)]) == 0
    return out


def test_train_then_serve_the_model(records_dir: Path, trained: Path) -> None:
    out = trained
    model = load_model(out)
    metrics = model.metadata["metrics"]
    assert model.feature_version == FEATURE_VERSION
    assert metrics["split_by"] == "clusters"
    assert metrics["held_out"]["records"] > 0 and metrics["train"]["records"] > 0
    assert set(metrics["held_out"]["clusters"]).isdisjoint(metrics["train"]["clusters"])
    LearnedEvaluator(model)  # the version matches: accepted
    # The simulator runs with it.
    run = simulate(SMALL.replace(strategy="learned", model_path=str(out), seed=9))
    assert run.complete
    assert run.decisions.get("parents", 0) > 0


def test_export_matches_scikit_learn_on_random_data() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, FEATURE_COUNT))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = np.nan_to_num(x[:, 0]) * 2 + np.nan_to_num(x[:, 3]) ** 2 + rng.normal(size=400)
    estimator = HistGradientBoostingRegressor(max_iter=20, max_depth=4).fit(x, y)
    model = export(estimator, {})
    assert np.allclose(model.predict(x), estimator.predict(x), atol=1e-9)


def test_training_refuses_too_few_records(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="records"):
        train(read_records(tmp_path))


def test_promotion_keeps_a_better_current_model(records_dir: Path, trained: Path) -> None:
    out = trained
    before = out.read_bytes()
    # The same data and seed train the same model: not better than itself, not promoted.
    args = ["model", "train", "--records", str(records_dir), "--out", str(out)]
    assert p2pctl([*args, "--current", str(out)]) == 0
    assert out.read_bytes() == before


def test_p2psim_records_option(tmp_path: Path) -> None:
    args = ["--nodes", "12", "--hosts-per-rack", "4", "--layers-mib", "4", "--seed", "3"]
    assert p2psim([*args, "--strategy", "rule", "--records", str(tmp_path)]) == 0
    assert (tmp_path / "default-rule-seed3.jsonl").stat().st_size > 0
