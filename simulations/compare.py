"""``p2psim compare``: strategies over many seeds, paired against a baseline.

Every strategy runs with the same seeds, and a seed fixes everything that is not the
strategy: arrivals, NIC speeds, stragglers, failures (common random numbers). So the
difference between a strategy and the baseline on the same seed leaves out the luck
of the draw, and the mean of those paired differences is estimated with far fewer
seeds than comparing the two means would need. Its 95% confidence interval is a
percentile bootstrap over seeds: resample the seeds with replacement, average the
differences, take the 2.5th and 97.5th percentiles of those averages. Relative
differences (in %) are the same, of ``strategy / baseline - 1`` per seed.

Two figures are paired: the makespan (the last node done) and the p99 node completion
time (since each node's arrival): the tail that a rollout waits for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.report import RunResult, simulate
from simulations.scenario import Scenario

BOOTSTRAP_RESAMPLES = 10_000
# The bootstrap draws from its own fixed stream: the same runs give the same intervals.
BOOTSTRAP_SEED = 20240604


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95_low": self.low, "ci95_high": self.high}


@dataclass(frozen=True)
class Row:
    strategy: str
    makespan_s: float  # means over seeds
    p50_s: float
    p95_s: float
    p99_s: float
    registry_images: float
    makespan_over_bound: float
    p99_over_bound: float
    # Strategy minus baseline on the same seed; the baseline's own row is all zeros.
    makespan_diff: Interval
    p95_diff: Interval
    p99_diff: Interval
    # Strategy / baseline - 1 on the same seed, in percent.
    makespan_rel_pct: Interval
    p99_rel_pct: Interval


@dataclass(frozen=True)
class Comparison:
    scenario: str
    baseline: str
    seeds: tuple[int, ...]
    runs: dict[str, list[RunResult]]  # strategy -> one run per seed, in seed order
    bounds_s: tuple[float, ...]  # the lower bound of each seed
    rows: tuple[Row, ...]


def bootstrap_mean(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """The mean of ``values`` and its 95% percentile-bootstrap confidence interval."""
    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if len(data) < 2 or not np.all(np.isfinite(data)):
        return Interval(mean, mean, mean)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(0, len(data), size=(resamples, len(data)))
    means = data[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(mean, float(low), float(high))


def _run(scenario: Scenario) -> RunResult:
    return simulate(scenario)


def run_all(
    scenarios: Sequence[Scenario],
    jobs: int = 1,
    on_done: Callable[[int], None] | None = None,
) -> list[RunResult]:
    """Simulate each scenario, in ``jobs`` processes; results in the input order.

    Each run is deterministic for its scenario, so the process it ran in never shows.
    """
    results: list[RunResult | None] = [None] * len(scenarios)
    if jobs <= 1:
        for index, scenario in enumerate(scenarios):
            results[index] = simulate(scenario)
            if on_done is not None:
                on_done(index + 1)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for index, result in enumerate(pool.map(_run, scenarios)):
                results[index] = result
                if on_done is not None:
                    on_done(index + 1)
    return [result for result in results if result is not None]


def compare(
    scenario: Scenario,
    strategies: Sequence[str],
    baseline: str,
    seeds: Sequence[int],
    jobs: int = 1,
    on_done: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Run every strategy on every seed and pair each with ``baseline`` seed by seed."""
    if baseline not in strategies:
        strategies = [baseline, *strategies]
    plan = [scenario.replace(strategy=s, seed=seed) for s in strategies for seed in seeds]
    total = len(plan)
    results = run_all(plan, jobs, (lambda n: on_done(n, total)) if on_done else None)
    runs: dict[str, list[RunResult]] = {s: [] for s in strategies}
    for result in results:
        runs[result.strategy].append(result)
    base = runs[baseline]
    rows = [_row(strategy, these, base) for strategy, these in runs.items()]
    return Comparison(
        scenario=scenario.name,
        baseline=baseline,
        seeds=tuple(seeds),
        runs=runs,
        bounds_s=tuple(r.lower_bound_s for r in base),
        rows=tuple(rows),
    )


def _row(strategy: str, these: Sequence[RunResult], base: Sequence[RunResult]) -> Row:
    pairs = list(zip(these, base, strict=True))
    return Row(
        strategy=strategy,
        makespan_s=_mean(r.makespan_s for r in these),
        p50_s=_mean(r.completion_p50_s for r in these),
        p95_s=_mean(r.completion_p95_s for r in these),
        p99_s=_mean(r.completion_p99_s for r in these),
        registry_images=_mean(r.registry_images for r in these),
        makespan_over_bound=_mean(r.makespan_over_bound for r in these),
        p99_over_bound=_mean(_over(r.completion_p99_s, r.lower_bound_s) for r in these),
        makespan_diff=bootstrap_mean([a.makespan_s - b.makespan_s for a, b in pairs]),
        p95_diff=bootstrap_mean([a.completion_p95_s - b.completion_p95_s for a, b in pairs]),
        p99_diff=bootstrap_mean([a.completion_p99_s - b.completion_p99_s for a, b in pairs]),
        makespan_rel_pct=bootstrap_mean(
            [100 * (_over(a.makespan_s, b.makespan_s) - 1) for a, b in pairs]
        ),
        p99_rel_pct=bootstrap_mean(
            [100 * (_over(a.completion_p99_s, b.completion_p99_s) - 1) for a, b in pairs]
        ),
    )


def _over(value: float, reference: float) -> float:
    return value / reference if reference > 0 else math.nan


def _mean(values: Any) -> float:
    data = list(values)
    return sum(data) / len(data) if data else math.nan


def _diff(interval: Interval) -> str:
    return f"{interval.mean:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def _pct(interval: Interval) -> str:
    return f"{interval.mean:+.1f}% [{interval.low:+.1f}, {interval.high:+.1f}]"


def comparison_table(comparison: Comparison) -> str:
    """Means over seeds, and paired differences from the baseline with 95% CIs."""
    lines = [
        f"scenario {comparison.scenario}  seeds {len(comparison.seeds)}  "
        f"baseline {comparison.baseline}  (differences: strategy - baseline, same seed; "
        "95% bootstrap CI)",
        f"{'strategy':<10} {'makespan_s':>10} {'x_bound':>7} {'d_makespan_s [95% CI]':>24} "
        f"{'d_makespan [95% CI]':>23} {'p99_s':>7} {'d_p99_s [95% CI]':>24} "
        f"{'d_p99 [95% CI]':>23} {'registry_x':>10}",
    ]
    for row in comparison.rows:
        lines.append(
            f"{row.strategy:<10} {row.makespan_s:>10.2f} {row.makespan_over_bound:>7.2f} "
            f"{_diff(row.makespan_diff):>24} {_pct(row.makespan_rel_pct):>23} "
            f"{row.p99_s:>7.2f} {_diff(row.p99_diff):>24} {_pct(row.p99_rel_pct):>23} "
            f"{row.registry_images:>10.2f}"
        )
    bound = _mean(comparison.bounds_s)
    lines.append(f"{'bound':<10} {bound:>10.2f} {1.0:>7.2f}")
    return "\n".join(lines)


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "scenario": comparison.scenario,
        "baseline": comparison.baseline,
        "seeds": list(comparison.seeds),
        "lower_bound_s": list(comparison.bounds_s),
        "lower_bound_s_mean": _mean(comparison.bounds_s),
        "strategies": [
            {
                "strategy": row.strategy,
                "makespan_s_mean": row.makespan_s,
                "completion_p50_s_mean": row.p50_s,
                "completion_p95_s_mean": row.p95_s,
                "completion_p99_s_mean": row.p99_s,
                "registry_images_mean": row.registry_images,
                "makespan_over_bound_mean": row.makespan_over_bound,
                "completion_p99_over_bound_mean": row.p99_over_bound,
                "makespan_diff_s": row.makespan_diff.to_json(),
                "completion_p95_diff_s": row.p95_diff.to_json(),
                "completion_p99_diff_s": row.p99_diff.to_json(),
                "makespan_diff_pct": row.makespan_rel_pct.to_json(),
                "completion_p99_diff_pct": row.p99_rel_pct.to_json(),
                "runs": [run.to_json() for run in comparison.runs[row.strategy]],
            }
            for row in comparison.rows
        ],
    }
