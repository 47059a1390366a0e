"""The cluster benchmark's PNG: measured P2P and direct pulls against p2psim's prediction.

Left: the share of the N peers done by each time (measured P2P, measured direct, and
p2psim's rule and direct runs, every seed drawn), with the lower bounds. Right: the
makespans side by side, p2psim's as the median with the range over seeds. Drawn on a
bare matplotlib ``Figure`` with the Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLOURS = {"p2p": "tab:blue", "direct": "tab:red"}


def _cdf(axes: Axes, times_s: Sequence[float], nodes: int, **style: Any) -> None:
    ordered = sorted(times_s)
    shares = [(i + 1) / nodes for i in range(len(ordered))]
    axes.step(ordered, shares, where="post", **style)


def plot_cluster(report: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    figure = Figure(figsize=(13, 5.8), dpi=110)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    peers = report["parameters"]["peers"]
    figures = report["figures"]
    strategies = report["p2psim"].get("strategies", {})
    bars: list[tuple[str, float, str, tuple[float, float] | None]] = []
    for mode, strategy in (("p2p", "rule"), ("direct", "direct")):
        colour = COLOURS[mode]
        fig = figures.get(mode)
        if fig:
            times = [
                t
                for node, t in fig.get("completion_s_by_node", {}).items()
                if node != "seed" and t is not None
            ]
            _cdf(left, times, peers, color=colour, linewidth=2, label=f"{mode} measured")
            if fig.get("makespan_s"):
                bars.append((f"{mode}\nmeasured", fig["makespan_s"], colour, None))
        sim = strategies.get(strategy)
        if sim:
            for index, run in enumerate(sim["runs"]):
                _cdf(
                    left,
                    run["completion_times_s"],
                    peers,
                    color=colour,
                    linestyle="--",
                    linewidth=1,
                    alpha=0.6,
                    label=f"{mode} p2psim ({len(sim['runs'])} seeds)" if index == 0 else None,
                )
            low, high = sim["makespan_s_min"], sim["makespan_s_max"]
            median = sim["makespan_s_median"]
            bars.append((f"{mode}\np2psim", median, colour, (median - low, high - median)))
    for key, label, style in (
        ("lower_bound", "P2P lower bound", "-"),
        ("direct_lower_bound", "direct lower bound", ":"),
    ):
        seconds = report[key]["seconds"]
        left.axvline(seconds, color="black", linestyle=style, linewidth=1, label=label)
    left.set_xscale("log")
    # Seconds as plain numbers on the log axis, not powers of ten.
    for axis in (left.xaxis.set_major_formatter, left.xaxis.set_minor_formatter):
        axis(ScalarFormatter())
    left.set_xlabel("completion time since the go signal (s, log scale)")
    left.set_ylabel(f"share of the {peers} peers done")
    left.set_ylim(0, 1.02)
    left.grid(True, which="both", alpha=0.3)
    # Below the axes: the curves can be anywhere across the plot.
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize="small")
    left.set_title(f"cluster benchmark, {report['scenario']}: {peers} peers + seed")
    _bars(right, bars, report["lower_bound"]["seconds"])
    figure.tight_layout()
    figure.savefig(path)


def _bars(
    axes: Axes,
    bars: Sequence[tuple[str, float, str, tuple[float, float] | None]],
    bound_s: float,
) -> None:
    positions = list(range(len(bars)))
    for position, (_, seconds, colour, spread) in zip(positions, bars, strict=True):
        simulated = spread is not None
        axes.bar(
            position,
            seconds,
            color=colour,
            alpha=0.45 if simulated else 0.9,
            hatch="//" if simulated else None,
            yerr=[[spread[0]], [spread[1]]] if spread else None,
            capsize=4,
        )
        top = seconds + (spread[1] if spread else 0.0)
        axes.annotate(f"{seconds:.1f} s", (position, top), ha="center", va="bottom")
    axes.axhline(bound_s, color="black", linewidth=1, label=f"P2P lower bound {bound_s:.1f} s")
    axes.set_xticks(positions, [label for label, *_ in bars])
    axes.set_ylabel("makespan (s)")
    axes.set_title("makespan; p2psim: median and range over seeds")
    axes.legend(loc="lower right", fontsize="small", framealpha=0.9)
    axes.grid(True, axis="y", alpha=0.3)
