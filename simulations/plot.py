"""PNG plots: node completion-time CDFs per strategy, and the paired comparison.

Drawn with matplotlib's Agg canvas on a bare ``Figure`` (no pyplot, no display, no
global state), imported only when a plot is asked for, so a run without ``--plot`` does
not pay for importing matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# When a paired difference passes this many percent (direct pulls: thousands), the
# comparison axis turns symmetric-log, linear within SYMLOG_LINEAR_PCT of zero.
SYMLOG_ABOVE_PCT = 100.0
SYMLOG_LINEAR_PCT = 10.0

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from simulations.compare import Comparison
    from simulations.report import RunResult


def _cdf(axes: Axes, times_s: Sequence[float], nodes: int, label: str) -> None:
    """Share of ``nodes`` done by each time; nodes that never finished keep it below 1."""
    ordered = sorted(times_s)
    shares = [(i + 1) / nodes for i in range(len(ordered))]
    axes.step(ordered, shares, where="post", label=label)


def _finish_cdf_axes(axes: Axes, bound_s: float | None) -> None:
    if bound_s is not None and bound_s > 0:
        axes.axvline(bound_s, color="black", linestyle="--", linewidth=1, label="lower bound")
    axes.set_xscale("log")
    axes.set_xlabel("node completion time since arrival (s, log scale)")
    axes.set_ylabel("share of nodes done")
    axes.set_ylim(0, 1.02)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")


def plot_runs(results: Sequence[RunResult], path: Path) -> None:
    """One CDF per run (one per strategy) on log time, with the lower bound."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for result in results:
        label = f"{result.strategy} (makespan {result.makespan_s:.2f} s)"
        _cdf(axes, result.completion_times_s, result.nodes, label)
    first = results[0] if results else None
    _finish_cdf_axes(axes, first.lower_bound_s if first else None)
    if first is not None:
        axes.set_title(f"{first.scenario}: {first.nodes} nodes, seed {first.seed}")
    figure.tight_layout()
    figure.savefig(path)


def plot_comparison(comparison: Comparison, path: Path) -> None:
    """Left: completion CDFs pooled over seeds; right: paired differences with 95% CIs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 5), dpi=110)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for strategy, runs in comparison.runs.items():
        pooled = [t for run in runs for t in run.completion_times_s]
        _cdf(left, pooled, sum(run.nodes for run in runs), strategy)
    _finish_cdf_axes(left, min(comparison.bounds_s) if comparison.bounds_s else None)
    left.set_title(f"{comparison.scenario}: {len(comparison.seeds)} seeds pooled")
    rows = [row for row in comparison.rows if row.strategy != comparison.baseline]
    positions = list(range(len(rows)))
    means: list[float] = []
    for offset, label, color, intervals in (
        (-0.2, "makespan", "tab:blue", [row.makespan_rel_pct for row in rows]),
        (0.2, "p99 node completion", "tab:orange", [row.p99_rel_pct for row in rows]),
    ):
        centers = [i.mean for i in intervals]
        errors = [[i.mean - i.low for i in intervals], [i.high - i.mean for i in intervals]]
        right.barh(
            [p + offset for p in positions],
            centers,
            height=0.38,
            xerr=errors,
            capsize=3,
            color=color,
            alpha=0.7,
            label=label,
        )
        means.extend(centers)
    right.set_yticks(positions, [row.strategy for row in rows])
    right.axvline(0, color="black", linewidth=1)
    if any(abs(m) > SYMLOG_ABOVE_PCT for m in means if math.isfinite(m)):
        # Direct pulls differ by thousands of percent, P2P strategies by a few: a
        # linear axis would flatten the ones worth reading.
        right.set_xscale("symlog", linthresh=SYMLOG_LINEAR_PCT)
    right.set_xlabel(f"% vs {comparison.baseline}, same seed, 95% CI")
    right.set_title("paired difference (below 0: faster than the baseline)")
    right.legend(loc="best", fontsize="small")
    right.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
