"""Rebuild the shipped model from simulated clusters: ``make model``.

    python -m simulations.training --records build/records \\
        --out scheduler/learning/default_model.json

Runs every training scenario (``simulations/scenarios/training/*.yaml``) for a few seeds
with the rule and the random strategy, writing transfer records (``simulations.records``);
then trains on them as ``p2pctl model train`` does and writes the model. The random
strategy is there for coverage: the rule evaluator alone only ever hands out the parents
it likes, so the records would say little about the others. The held-out scenarios of
the README comparison (heterogeneous, oversubscribed) are not training scenarios.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from scheduler.learning.artifact import save_model
from scheduler.learning.dataset import read_records
from scheduler.learning.train import train
from simulations.records import simulate_recording
from simulations.scenario import Scenario, load_scenario

TRAINING_DIR = Path(__file__).with_name("scenarios") / "training"
TRAINING_STRATEGIES = ("rule", "random")
TRAINING_SEEDS = (101, 102, 103)


def training_runs(seeds: Sequence[int] = TRAINING_SEEDS) -> list[Scenario]:
    scenarios = [load_scenario(path) for path in sorted(TRAINING_DIR.glob("*.yaml"))]
    return [
        scenario.replace(strategy=strategy, seed=seed)
        for scenario in scenarios
        for seed in seeds
        for strategy in TRAINING_STRATEGIES
    ]


def _record(job: tuple[Scenario, Path]) -> int:
    scenario, directory = job
    return simulate_recording(scenario, directory)[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.training", description=__doc__)
    parser.add_argument("--records", type=Path, required=True, metavar="DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    shutil.rmtree(args.records, ignore_errors=True)
    runs = training_runs()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        counts = list(pool.map(_record, [(run, args.records) for run in runs]))
    print(f"{sum(counts)} records from {len(runs)} runs in {args.records}", file=sys.stderr)
    dataset = read_records(args.records)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = train(dataset, trained_at=now)
    held = result.metrics["held_out"]
    print(
        f"held-out rmse {held['rmse']:.3f} (mean only {held['rmse_mean_only']:.3f}), "
        f"pairwise {held['pairwise_accuracy']}, rule pairwise {held['rule_pairwise_accuracy']}",
        file=sys.stderr,
    )
    save_model(result.model, args.out)
    print(f"wrote {args.out}: model {result.model.version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
