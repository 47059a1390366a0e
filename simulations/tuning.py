"""``p2psim tune``: grid search of the rule evaluator's weights on the training scenarios.

    p2psim tune --out simulations/tuned_rule_weights.json

The "tuned rule" baseline of issue 5: the rule evaluator (Dragonfly's terms) with
weights chosen by a search that gets the same data and the same compute as the learned
model, so a win of the model is a win of learning, not of having searched at all.

**Data.** Only the training scenarios and seeds of ``make model``
(``simulations/scenarios/training/*.yaml``, seeds 101-103). The held-out scenarios of the
comparison (``simulations/scenarios/*.yaml``: heterogeneous, oversubscribed, ...) are
refused, so the search can never see them.

**Objective** (lower is better): the mean over the training runs (every scenario x
seed) of ``p99 node completion time / lower bound`` of the run. The p99 is the figure
issue 5's target is about; dividing by the bound puts runs of different sizes on one
scale. The scenarios' ratios differ a lot (about 0.06 with staggered arrivals, since
the bound there includes the arrival spread; about 20 behind 6:1 rack uplinks), so the
thin-uplink runs weigh most in the mean. The geometric mean is recorded next to it for
each candidate.

**Budget: 144 simulated runs (12 candidates x 12 training runs).** ``make model`` runs
4 scenarios x 3 seeds x {rule, random} = 24 recorded runs and one fit; measured with
``--jobs 1`` on the compiled modules it took 73 s of CPU (57 s user, 16 s system: the
records are ~600 MB of JSON lines). A plain training run takes about 0.5 s of CPU, so
the same compute buys about 144 runs: 12 candidates at 12 runs each. Matching the 24
runs alone would allow 2 candidates, no search at all; matching the CPU time is the
comparable budget. Candidate 0 is Dragonfly's default, so the tuned weights can only
tie or beat it on the training objective.

**Grid** (``GRID``): scores only rank candidates, so scaling every weight alike changes
nothing, and the load-quality and idc weights stay at Dragonfly's (0.6, 0.2): in the
simulator every host has the same idc, so that weight cannot matter. The budget goes to
three levers, 2 x 2 x 3: the rack (``location_affinity``: 1 in the same rack, 0.6
across) at 0 (ignored) or 0.1 (Dragonfly); seed peers (``host_type``: a seed still
fetching 1, a normal peer 0.5, a finished seed 0) at 0.1 (Dragonfly) or 0.4; and three
mixes of the load term (headroom, duration, concurrency): Dragonfly's (0.5, 0.3, 0.2),
headroom only (1, 0, 0), concurrency only (0, 0, 1).

This is the second grid. The first (location 0.1 / 0.4 / 1.6 x four load mixes, the
same budget, recorded in docs/learned-scoring.md) showed that on the training runs a
rack weight above Dragonfly's changed nothing: every candidate with the same load mix
had the same score, and scoring each decision of a thin-uplinks run with both 0.1 and
1.6 gave the same four parents every time (likely because a 15-candidate sample holds
few peers of the child's rack, and those already rank first). Of its load mixes only
headroom-only changed any run. So the search as shipped cost two budgets of training
runs, not one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.core import RuleWeights
from simulations.compare import run_all
from simulations.provenance import provenance
from simulations.report import RunResult
from simulations.scenario import Scenario, ScenarioError, load_scenario
from simulations.training import TRAINING_DIR, TRAINING_SEEDS

HELD_OUT_DIR = TRAINING_DIR.parent
WEIGHTS_FORMAT = "starling-rule-weights"
WEIGHTS_FORMAT_VERSION = 1
LOCATION_WEIGHTS = (0.1, 0.0)
HOST_TYPE_WEIGHTS = (0.1, 0.4)
LOAD_MIXES = ((0.5, 0.3, 0.2), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
# Dragonfly's values first, so candidate 0 is Dragonfly's default.
GRID: tuple[RuleWeights, ...] = tuple(
    RuleWeights(
        location_affinity=location,
        host_type=host_type,
        bandwidth_headroom=headroom,
        bandwidth_duration=duration,
        concurrency=concurrency,
    )
    for location in LOCATION_WEIGHTS
    for host_type in HOST_TYPE_WEIGHTS
    for headroom, duration, concurrency in LOAD_MIXES
)
# len(GRID) x 4 training scenarios x 3 seeds; see the module's docstring.
BUDGET_RUNS = 144


@dataclass(frozen=True)
class Candidate:
    weights: RuleWeights
    runs: tuple[RunResult, ...]

    @property
    def ratios(self) -> list[float]:
        """``p99 node completion / lower bound`` of each run."""
        return [
            r.completion_p99_s / r.lower_bound_s if r.lower_bound_s > 0 else math.inf
            for r in self.runs
        ]

    @property
    def score(self) -> float:
        """The objective: the mean of ``ratios`` (inf if a run did not finish)."""
        if not all(r.complete for r in self.runs):
            return math.inf
        ratios = self.ratios
        return sum(ratios) / len(ratios)

    @property
    def geometric_mean(self) -> float:
        ratios = self.ratios
        if not ratios or not all(0 < x < math.inf for x in ratios):
            return math.inf
        return math.exp(sum(math.log(x) for x in ratios) / len(ratios))


def training_scenarios(paths: Sequence[Path] = ()) -> list[Scenario]:
    """The scenarios at ``paths`` (default: every training scenario), as the tuned rule.

    ScenarioError for a held-out scenario (a YAML file directly in simulations/scenarios).
    """
    paths = list(paths) or sorted(TRAINING_DIR.glob("*.yaml"))
    for path in paths:
        if path.resolve().parent == HELD_OUT_DIR.resolve():
            raise ScenarioError(f"{path}: a held-out scenario; tune on training scenarios only")
    return [load_scenario(path).replace(strategy="tuned") for path in paths]


def search(
    scenarios: Sequence[Scenario],
    seeds: Sequence[int],
    candidates: Sequence[RuleWeights],
    weights_dir: Path,
    jobs: int = 1,
) -> list[Candidate]:
    """Every candidate on every scenario x seed; the candidates' weights are written to
    ``weights_dir`` (the tuned strategy reads its weights from a file)."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    results: list[Candidate] = []
    for index, weights in enumerate(candidates):
        path = weights_dir / f"candidate-{index}.json"
        path.write_text(json.dumps({"weights": weights.to_json()}))
        plan = [s.replace(seed=seed, rule_weights=str(path)) for s in scenarios for seed in seeds]
        results.append(Candidate(weights, tuple(run_all(plan, jobs))))
    return results


def weights_file(
    results: Sequence[Candidate], seeds: Sequence[int], meta: dict[str, Any]
) -> dict[str, Any]:
    """The JSON the tuned strategy reads: the best weights, and how they were found."""
    best = min(range(len(results)), key=lambda i: results[i].score)
    first = results[0].runs
    return {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "weights": results[best].weights.to_json(),
        "metadata": {
            **meta,
            "objective": "mean over the training runs of p99 node completion / lower bound "
            "(lower is better)",
            "scenarios": sorted({run.scenario for run in first}),
            "seeds": list(seeds),
            "grid": {
                "location_affinity": list(LOCATION_WEIGHTS),
                "host_type": list(HOST_TYPE_WEIGHTS),
                "load_mix (bandwidth_headroom, bandwidth_duration, concurrency)": [
                    list(mix) for mix in LOAD_MIXES
                ],
                "fixed": "load_quality 0.6, idc_affinity 0.2 (Dragonfly's)",
            },
            "budget": {
                "runs": sum(len(c.runs) for c in results),
                "candidates": len(results),
                "runs_per_candidate": len(first),
                "why": "make model's CPU time (73 s: 24 recorded runs and one fit) in "
                "plain training runs of about 0.5 s: 144 runs (simulations/tuning.py)",
            },
            "best_candidate": best,
            "candidates": [
                {
                    "weights": c.weights.to_json(),
                    "score": c.score,
                    "geometric_mean": c.geometric_mean,
                    "runs": [
                        {"scenario": r.scenario, "seed": r.seed, "p99_over_bound": ratio}
                        for r, ratio in zip(c.runs, c.ratios, strict=True)
                    ],
                }
                for c in results
            ],
        },
    }


def tune_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="p2psim tune",
        description="Grid search of the rule evaluator's weights on the training scenarios "
        "(simulations/tuning.py); writes the best as JSON for --strategy tuned.",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE")
    parser.add_argument(
        "--scenario",
        type=Path,
        action="append",
        default=[],
        help="a training scenario (repeat; default: simulations/scenarios/training/*.yaml)",
    )
    parser.add_argument(
        "--seeds",
        default=",".join(map(str, TRAINING_SEEDS)),
        help="comma-separated (default: make model's)",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=len(GRID),
        help=f"the first N of the grid (default: all {len(GRID)}, the budget)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    args = parser.parse_args(argv)
    try:
        scenarios = training_scenarios(args.scenario)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not seeds or not 1 <= args.candidates <= len(GRID) or args.jobs < 1:
            raise ScenarioError(f"need seeds, 1 <= --candidates <= {len(GRID)}, --jobs >= 1")
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"p2psim tune: {exc}", file=sys.stderr)
        return 2
    origin = provenance("p2psim", ["tune", *argv])  # the code as the runs start
    with tempfile.TemporaryDirectory(prefix="p2psim-tune-") as scratch:
        results = search(scenarios, seeds, GRID[: args.candidates], Path(scratch), args.jobs)
    data = weights_file(results, seeds, origin)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    for index, candidate in enumerate(results):
        mark = "*" if index == data["metadata"]["best_candidate"] else " "
        print(f"{mark} {index:2d} score {candidate.score:8.4f}  {candidate.weights.to_json()}")
    print(f"wrote {args.out}")
    return 0
