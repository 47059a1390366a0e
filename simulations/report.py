"""What one run measured, as a dataclass, a terminal summary, a table and JSON."""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulations import accel
from simulations.bound import lower_bound_s
from simulations.scenario import Scenario
from simulations.swarm import Swarm


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class RunResult:
    scenario: str
    strategy: str
    seed: int
    nodes: int
    nodes_completed: int
    image_bytes: int
    makespan_s: float
    completion_p50_s: float
    completion_p95_s: float
    completion_p99_s: float
    registry_bytes: int
    cross_rack_bytes: int
    p2p_bytes: int
    lower_bound_s: float
    events: int
    registry_peak_transfers: int
    back_to_source_peers: int
    # Nodes that failed (churn) before they had the image; the figures cover the rest.
    nodes_failed: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    completion_times_s: tuple[float, ...] = ()

    @property
    def complete(self) -> bool:
        return self.nodes_completed + self.nodes_failed == self.nodes

    @property
    def registry_images(self) -> float:
        return self.registry_bytes / self.image_bytes

    @property
    def makespan_over_bound(self) -> float:
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s > 0 else math.nan

    def to_json(self, with_times: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_times:
            del data["completion_times_s"]
        data["registry_images"] = self.registry_images
        data["makespan_over_bound"] = self.makespan_over_bound
        return data


def result_of(swarm: Swarm) -> RunResult:
    scenario: Scenario = swarm.scenario
    times = tuple(
        node.done_at_s - node.arrival_s for node in swarm.nodes if node.done_at_s is not None
    )
    finished = [node.done_at_s for node in swarm.nodes if node.done_at_s is not None]
    complete = swarm.complete
    # The bound covers the nodes expected to finish; every host counts as an uploader
    # (a failed one uploaded for a while), which only lowers it, so it stays a bound.
    receivers = [node for node in swarm.nodes if node.done_at_s is not None or not node.host.failed]
    bound = lower_bound_s(
        scenario.image_bytes,
        scenario.registry_egress_bps,
        [node.host.download_bps for node in receivers],
        [host.upload_bps for host in swarm.cluster.hosts],
        [node.arrival_s for node in receivers] if scenario.arrival_spread_s > 0 else (),
    )
    counters = swarm.counters
    return RunResult(
        scenario=scenario.name,
        strategy=scenario.strategy,
        seed=scenario.seed,
        nodes=len(swarm.nodes),
        nodes_completed=len(finished),
        image_bytes=scenario.image_bytes,
        makespan_s=(max(finished) if finished else 0.0) if complete else math.inf,
        completion_p50_s=percentile(times, 50),
        completion_p95_s=percentile(times, 95),
        completion_p99_s=percentile(times, 99),
        registry_bytes=counters.registry_bytes,
        cross_rack_bytes=counters.cross_rack_bytes,
        p2p_bytes=counters.p2p_bytes,
        lower_bound_s=bound,
        events=swarm.queue.processed,
        registry_peak_transfers=swarm.cluster.registry.peak_active,
        back_to_source_peers=counters.back_to_source_peers,
        nodes_failed=swarm.churn.lost,
        decisions=dict(sorted(counters.decisions.items())),
        completion_times_s=times,
    )


def simulate(scenario: Scenario, on_tick: Callable[[Swarm], None] | None = None) -> RunResult:
    """Run the scenario; ``on_tick(swarm)`` every few thousand events (progress bars).

    Python's cyclic garbage collector is off while the swarm is built and run: a run
    makes no cyclic garbage (a 1,000-node run with churn left the collector nothing in
    any generation), while each full pass walks every live object, and at 10,000 nodes
    those passes cost a fifth of the run (122 s against 95 s of CPU for its first 2.5
    simulated seconds). Reference counting still frees everything as it goes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        swarm = Swarm(scenario)
        if on_tick is not None:
            swarm.queue.on_tick = lambda: on_tick(swarm)
        swarm.run()
        return result_of(swarm)
    finally:
        if enabled:
            gc.enable()


def summary(result: RunResult, wall_s: float | None = None) -> str:
    gib = 1024**3
    lines = [
        f"scenario {result.scenario}  strategy {result.strategy}  seed {result.seed}  "
        f"nodes {result.nodes_completed}/{result.nodes}"
        + (f" ({result.nodes_failed} failed)" if result.nodes_failed else "")
        + f"  image {result.image_bytes / gib:.2f} GiB",
        f"  makespan          {result.makespan_s:9.2f} s",
        f"  node completion   p50 {result.completion_p50_s:.2f} s  "
        f"p95 {result.completion_p95_s:.2f} s  p99 {result.completion_p99_s:.2f} s",
        f"  registry bytes    {result.registry_bytes / gib:9.2f} GiB "
        f"({result.registry_images:.2f} x image, {result.back_to_source_peers} origin pulls)",
        f"  cross-rack bytes  {result.cross_rack_bytes / gib:9.2f} GiB "
        f"(of {result.p2p_bytes / gib:.2f} GiB peer-to-peer)",
        f"  lower bound       {result.lower_bound_s:9.2f} s  "
        f"makespan/bound {result.makespan_over_bound:.2f}",
    ]
    if wall_s is not None:
        lines.append(
            f"  wall time         {wall_s:9.2f} s  ({result.events} events, {accel.label()})"
        )
    return "\n".join(lines)


def table(results: Sequence[RunResult]) -> str:
    """One row per run, then the lower bound as a row of its own (same scenario)."""
    gib = 1024**3
    header = (
        f"{'strategy':<10} {'makespan_s':>10} {'p50_s':>8} {'p95_s':>8} {'p99_s':>8} "
        f"{'registry_GiB':>12} {'cross_rack_GiB':>14} {'x_bound':>8}"
    )
    lines = [header]
    for r in results:
        lines.append(
            f"{r.strategy:<10} {r.makespan_s:>10.2f} {r.completion_p50_s:>8.2f} "
            f"{r.completion_p95_s:>8.2f} {r.completion_p99_s:>8.2f} "
            f"{r.registry_bytes / gib:>12.2f} {r.cross_rack_bytes / gib:>14.2f} "
            f"{r.makespan_over_bound:>8.2f}"
        )
    if results:
        bound = results[0].lower_bound_s
        lines.append(
            f"{'bound':<10} {bound:>10.2f} {'':>8} {'':>8} {'':>8} "
            f"{results[0].image_bytes / gib:>12.2f} {'':>14} {1.0:>8.2f}"
        )
    return "\n".join(lines)
