"""``p2psim``: run a scenario and print what an operator asks before a rollout.

p2psim --nodes 1000 --strategy rule --seed 1 --json out.json --plot cdf.png
p2psim --scenario simulations/scenarios/churn.yaml --strategy all
p2psim compare --nodes 300 --seeds 10 --strategies rule,random,kraken --baseline rule
p2psim compare --strategies rule,tuned --rule-weights weights.json   # tuned: rule, other weights
p2psim tune --out weights.json   # grid search of the rule's weights (simulations/tuning.py)
p2psim --nodes 16 --layers-mib 4,16 --trace run.trace.jsonl   # replayable into p2p-scheduler

Every scenario key is a flag of the same name (``hosts_per_rack``: ``--hosts-per-rack``)
that overrides the scenario file; lists are comma-separated (``--layers-mib 8,16``,
``--nic-mix-gbps 10:0.7,25:0.3``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.compare import compare, comparison_json, comparison_table
from simulations.progress import Progress
from simulations.report import RunResult, simulate, summary, table
from simulations.scenario import STRATEGIES, Scenario, ScenarioError, load_scenario
from simulations.swarm import Swarm

# Scenario keys with a flag of their own (strategy: --strategy takes "all" too).
_OWN_FLAGS = {"strategy"}
_METAVARS = {"tuple[float, ...]": "X,Y,...", "tuple[tuple[float, float], ...]": "GBPS:SHARE,..."}


def _scenario_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", type=Path, help="YAML file of scenario keys")
    group = parser.add_argument_group("scenario keys (override the file)")
    defaults = Scenario()
    for f in dataclasses.fields(Scenario):
        if f.name in _OWN_FLAGS:
            continue
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=_METAVARS.get(str(f.type), str(f.type).upper()),
            help=f"default: {shown}",
        )


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--plot", type=Path, help="write a PNG of completion-time CDFs here")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2psim",
        description="Simulate a cold-start image pull on the real scheduler core. "
        "'p2psim compare --help' for the multi-seed comparison, "
        "'p2psim tune --help' for the grid search of the rule's weights.",
    )
    parser.add_argument(
        "--strategy",
        choices=(*STRATEGIES, "all"),
        help=f"parent selection: {', '.join(STRATEGIES)}, or all (default: the scenario's)",
    )
    parser.add_argument(
        "--records",
        type=Path,
        metavar="DIR",
        help="write the scheduler's transfer records of each run here (JSON lines), "
        "the training data of p2pctl model train",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="write every call the run makes on the scheduler core, with its answer, here "
        "(JSON lines, simulations/trace.py): replayable into p2p-scheduler",
    )
    _scenario_flags(parser)
    _output_flags(parser)
    return parser


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2psim compare",
        description="Several strategies over many seeds with common random numbers; "
        "paired differences from a baseline with bootstrap 95% confidence intervals.",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="comma-separated (default: all of them)",
    )
    parser.add_argument("--baseline", default="rule", choices=STRATEGIES)
    parser.add_argument(
        "--seeds", type=int, default=10, help="seeds per strategy, from --seed on (default 10)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="runs in parallel processes (default: one per CPU)",
    )
    _scenario_flags(parser)
    _output_flags(parser)
    return parser


def _load(args: argparse.Namespace) -> Scenario:
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Scenario):
        value = getattr(args, f.name, None)
        if value is None or f.name in _OWN_FLAGS:
            continue
        if f.type == "tuple[float, ...]":
            value = [item for item in value.split(",") if item.strip()]
        changes[f.name] = value
    return scenario.replace(**changes)


def _check_files(strategies: Sequence[str], scenario: Scenario) -> None:
    """Fail before any run if the tuned strategy's weights file is unusable."""
    if "tuned" in strategies:
        from simulations.evaluators import DEFAULT_RULE_WEIGHTS_PATH, load_rule_weights

        load_rule_weights(scenario.rule_weights or DEFAULT_RULE_WEIGHTS_PATH)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return _compare_main(argv[1:])
    if argv[:1] == ["tune"]:
        from simulations.tuning import tune_main

        return tune_main(argv[1:])
    args = _run_parser().parse_args(argv)
    try:
        scenario = _load(args)
        strategies = STRATEGIES if args.strategy == "all" else (args.strategy or scenario.strategy,)
        runs = [scenario.replace(strategy=strategy) for strategy in strategies]
        _check_files(strategies, scenario)
        if args.trace and (len(runs) > 1 or args.records or runs[0].strategy == "direct"):
            raise ScenarioError("--trace records one run of a P2P strategy, without --records")
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"p2psim: {exc}", file=sys.stderr)
        return 2
    progress = Progress(Progress.wanted(args.progress))
    results: list[RunResult] = []
    walls: list[float] = []
    for run in runs:

        def tick(swarm: Swarm, run: Scenario = run) -> None:
            progress.update(
                f"{run.strategy} seed {run.seed}",
                swarm.nodes_done + swarm.churn.lost,
                len(swarm.nodes),
                f"sim {swarm.queue.now:.1f} s",
            )

        started = time.perf_counter()  # wall time is reported, never simulated
        if args.trace:
            from simulations.trace import simulate_tracing

            result, steps = simulate_tracing(run, args.trace, tick if progress.enabled else None)
            print(f"trace: {steps} steps in {args.trace}", file=sys.stderr)
        elif args.records:
            from simulations.records import simulate_recording

            result, count = simulate_recording(
                run, args.records, tick if progress.enabled else None
            )
            print(f"records: {count} transfer records in {args.records}", file=sys.stderr)
        else:
            result = simulate(run, tick if progress.enabled else None)
        walls.append(time.perf_counter() - started)
        progress.close()
        print(summary(result, walls[-1]), flush=True)
        results.append(result)
    if len(results) > 1:
        print(table(results))
    if args.json:
        data = [{**r.to_json(), "wall_s": wall} for r, wall in zip(results, walls, strict=True)]
        args.json.write_text(json.dumps(data if len(data) > 1 else data[0], indent=2))
    if args.plot:
        from simulations.plot import plot_runs

        plot_runs(results, args.plot)
        print(f"plot: {args.plot}")
    return 0 if all(r.complete for r in results) else 1


def _compare_main(argv: Sequence[str]) -> int:
    args = _compare_parser().parse_args(argv)
    try:
        scenario = _load(args)
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        unknown = sorted(set(strategies) - set(STRATEGIES))
        if unknown or not strategies:
            raise ScenarioError(f"--strategies: unknown {unknown}; choose from {STRATEGIES}")
        if args.seeds < 1 or args.jobs < 1:
            raise ScenarioError("--seeds and --jobs must be >= 1")
        _check_files([*strategies, args.baseline], scenario)
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"p2psim: {exc}", file=sys.stderr)
        return 2
    from simulations.provenance import provenance

    origin = provenance("p2psim", ["compare", *argv])  # the code as the runs start
    progress = Progress(Progress.wanted(args.progress))
    seeds = range(scenario.seed, scenario.seed + args.seeds)
    comparison = compare(
        scenario,
        strategies,
        args.baseline,
        seeds,
        jobs=args.jobs,
        on_done=lambda done, total: progress.update("compare", done, total, "runs"),
    )
    progress.close()
    print(comparison_table(comparison))
    if args.json:
        data = {**origin, **comparison_json(comparison)}
        args.json.write_text(json.dumps(data, indent=2))
    if args.plot:
        from simulations.plot import plot_comparison

        plot_comparison(comparison, args.plot)
        print(f"plot: {args.plot}")
    complete = all(run.complete for runs in comparison.runs.values() for run in runs)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
