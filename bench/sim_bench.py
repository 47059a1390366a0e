"""How fast ``p2psim`` runs, and what it predicts, at 100, 1,000 and 10,000 nodes.

Run as ``python -m bench.sim_bench``. For each cluster size it runs the same scenario
(the default one: 10 Gbps NICs, 40 hosts per rack at 3:1, a 10 Gbps registry, the 1 GiB
image, all nodes at once; 10,000 nodes is ``simulations/scenarios/10k.yaml``) once per
strategy with the same seed, in this process, one after the other, and records:

* ``wall_s``: wall time of the simulation alone (building the cluster included, Python
  start-up and imports not), with the number of events it processed, and ``cpu_s``, the
  CPU time the process spent on it: on a shared machine other load stretches the wall
  time but not the CPU time, so ``cpu_s`` is what the code costs;
* what the simulation predicts: makespan, node completion p50/p95/p99, registry bytes
  in images, and the makespan over the fluid lower bound.

Issue 4's targets on a 2-core machine: 1,000 nodes with a 1 GiB image in at most 10 s,
10,000 nodes in at most 3 minutes (checked on the ``rule`` strategy, the one that
ships). The simulation is single-threaded; other load on the machine slows it, so the
machine's busy share just before the runs and the load average are recorded with the
figures. Results go to ``bench/results/sim.json`` and a table on stdout.

The runs use p2psim's compiled modules when ``make sim-accel`` built them
(``simulations/accel.py``; ``parameters.modules`` says which ran). With them, the
1,000-node rule run is repeated with the pure-Python modules in a child process, and
``pure_python`` holds its times, the speed-up and whether the results are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.probes import host_busy_over, load_average
from bench.report import machine_facts, round_
from simulations import accel
from simulations.progress import Progress
from simulations.report import RunResult, simulate
from simulations.scenario import Scenario, load_scenario
from simulations.swarm import Swarm

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results" / "sim.json"
TEN_K = REPO_ROOT / "simulations" / "scenarios" / "10k.yaml"
STRATEGIES = ("rule", "random", "kraken", "oracle", "direct")
# At 10,000 nodes only the rule strategy runs (the target is set on it; each other one
# takes minutes) unless --every-strategy-at-10k.
TEN_K_STRATEGIES = ("rule",)
# Wall-time targets of issue 4, by node count, for the rule strategy.
TARGETS_S = {1000: 10.0, 10000: 180.0}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_bench", description=__doc__)
    parser.add_argument(
        "--sizes",
        default="100,1000,10000",
        help="comma-separated node counts (10000 runs the 10k scenario file)",
    )
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--every-strategy-at-10k",
        dest="every_10k",
        action="store_true",
        help="run every strategy at 10,000 nodes too, not only rule",
    )
    parser.add_argument(
        "--no-pure",
        action="store_true",
        help="with the compiled modules, do not also time the pure-Python modules",
    )
    return parser


def _scenario(nodes: int, seed: int) -> Scenario:
    base = load_scenario(TEN_K) if nodes == 10000 else Scenario(name=f"default-{nodes}")
    return base.replace(nodes=nodes, seed=seed)


def _figures(result: RunResult, wall_s: float, cpu_s: float) -> dict[str, Any]:
    return {
        "strategy": result.strategy,
        "nodes": result.nodes,
        "complete": result.complete,
        "wall_s": round_(wall_s, 2),
        "cpu_s": round_(cpu_s, 2),
        "events": result.events,
        "events_per_s": round(result.events / wall_s) if wall_s > 0 else None,
        "makespan_s": round_(result.makespan_s),
        "completion_p50_s": round_(result.completion_p50_s),
        "completion_p95_s": round_(result.completion_p95_s),
        "completion_p99_s": round_(result.completion_p99_s),
        "lower_bound_s": round_(result.lower_bound_s),
        "makespan_over_bound": round_(result.makespan_over_bound, 3),
        "registry_images": round_(result.registry_images, 3),
        "cross_rack_share_of_p2p": round_(result.cross_rack_bytes / result.p2p_bytes, 3)
        if result.p2p_bytes
        else None,
    }


def _table(runs: list[dict[str, Any]]) -> str:
    lines = [
        f"{'nodes':>6} {'strategy':<8} {'wall_s':>8} {'cpu_s':>8} {'events':>9} {'makespan_s':>10} "
        f"{'bound_s':>8} {'x_bound':>8} {'registry_x':>10}"
    ]
    for run in runs:
        lines.append(
            f"{run['nodes']:>6} {run['strategy']:<8} {run['wall_s']:>8.2f} {run['cpu_s']:>8.2f} "
            f"{run['events']:>9} "
            f"{run['makespan_s']:>10.2f} {run['lower_bound_s']:>8.2f} "
            f"{run['makespan_over_bound']:>8.2f} {run['registry_images']:>10.2f}"
        )
    return "\n".join(lines)


def _targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for run in runs:
        limit = TARGETS_S.get(run["nodes"])
        if limit is not None and run["strategy"] == "rule":
            checks.append(
                {
                    "what": f"rule, {run['nodes']} nodes, 1 GiB image: wall time",
                    "target": f"<= {limit:.0f} s",
                    "measured_s": run["wall_s"],
                    "cpu_s": run["cpu_s"],
                    "met": run["wall_s"] <= limit,
                }
            )
    return checks


def _pure_python(nodes: int, seed: int, compiled: dict[str, Any]) -> dict[str, Any]:
    """The same rule run with the pure-Python modules, in a child process (a process
    loads one or the other), for the speed-up measured in this run."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "pure.json"
        argv = ["--sizes", str(nodes), "--strategies", "rule", "--seed", str(seed)]
        subprocess.run(
            [sys.executable, "-m", "bench.sim_bench", *argv, "--no-pure", "--out", str(out)],
            env={**os.environ, accel.ENV: "0"},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        pure: dict[str, Any] = json.loads(out.read_text())["runs"][0]
    same = ("makespan_s", "events", "completion_p99_s", "registry_images")
    return {
        "nodes": nodes,
        "strategy": "rule",
        "wall_s": pure["wall_s"],
        "cpu_s": pure["cpu_s"],
        "same_results": all(pure[key] == compiled[key] for key in same),
        "compiled_speedup_cpu": round_(pure["cpu_s"] / compiled["cpu_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    strategies = [s for s in args.strategies.split(",") if s.strip()]
    busy_before = host_busy_over(1.0)
    load_before = load_average()
    progress = Progress(Progress.wanted(None))
    runs: list[dict[str, Any]] = []
    for nodes in sizes:
        for strategy in strategies:
            if nodes >= 10000 and strategy not in TEN_K_STRATEGIES and not args.every_10k:
                continue
            scenario = _scenario(nodes, args.seed).replace(strategy=strategy)

            def tick(swarm: Swarm, label: str = f"{nodes} nodes {strategy}") -> None:
                done = swarm.nodes_done + swarm.churn.lost
                progress.update(label, done, len(swarm.nodes), f"sim {swarm.queue.now:.1f} s")

            started, cpu_started = time.perf_counter(), time.process_time()
            result = simulate(scenario, tick if progress.enabled else None)
            wall_s = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            progress.close()
            runs.append(_figures(result, wall_s, cpu_s))
            print(_table(runs[-1:]).splitlines()[-1], flush=True)
    checks = _targets(runs)
    pure = None
    reference = next((r for r in runs if r["nodes"] == 1000 and r["strategy"] == "rule"), None)
    if accel.status.startswith("compiled") and not args.no_pure and reference is not None:
        pure = _pure_python(1000, args.seed, reference)
    report = {
        "benchmark": "sim",
        "machine": {
            **machine_facts(),
            "host_cpu_busy_before": round_(busy_before, 3),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "parameters": {
            "seed": args.seed,
            "scenario": "defaults (simulations/scenario.py); 10000 nodes: "
            "simulations/scenarios/10k.yaml",
            "sharing": "fast",
            # simulations/accel.py: compiled with mypyc, or why the pure modules ran.
            "modules": accel.status,
        },
        "units": {
            "wall_s": "wall time of simulate(): cluster built, run to the last node",
            "makespan_s": "simulated seconds until the last node has every layer",
            "pure_python.compiled_speedup_cpu": "CPU seconds pure / CPU seconds compiled",
            "makespan_over_bound": "makespan / max(F/u_s, F/d_min, N F/(u_s + sum u_i))",
            "registry_images": "bytes the registry served / image bytes",
        },
        "runs": runs,
        "targets": checks,
        "pure_python": pure,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(runs))
    for check in checks:
        verdict = "met" if check["met"] else "NOT met"
        print(
            f"{check['what']}: {check['measured_s']:.1f} s ({check['cpu_s']:.1f} s CPU), "
            f"target {check['target']}: {verdict}"
        )
    print(f"modules: {accel.status}")
    if pure is not None:
        print(
            f"pure Python, rule, 1000 nodes: {pure['cpu_s']:.1f} s CPU, compiled "
            f"{pure['compiled_speedup_cpu']:.2f}x faster, same results: {pure['same_results']}"
        )
    print(f"results: {args.out}")
    return 0 if all(run["complete"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
