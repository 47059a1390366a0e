"""``p2psim``: run one scenario and print what an operator asks before a rollout.

python -m simulations.cli --nodes 1000 --strategy rule --seed 1 --json out.json
python -m simulations.cli --scenario simulations/scenarios/default.yaml --strategy all
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.report import simulate, summary
from simulations.scenario import STRATEGIES, Scenario, ScenarioError, load_scenario

# Command-line flags that override scenario keys of the same name.
_OVERRIDES: tuple[tuple[str, type], ...] = (
    ("nodes", int),
    ("seed", int),
    ("sharing", str),
    ("hosts_per_rack", int),
    ("oversubscription", float),
    ("registry_egress_bps", float),
    ("registry_max_transfers", int),
    ("host_upload_bps", float),
    ("host_download_bps", float),
    ("seed_peers", int),
    ("arrival_spread_s", float),
    ("layer_concurrency", int),
    ("schedule_latency_s", float),
    ("request_latency_s", float),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2psim", description="Simulate a cold-start image pull on the real scheduler core."
    )
    parser.add_argument("--scenario", type=Path, help="YAML file of scenario keys")
    parser.add_argument(
        "--strategy",
        choices=(*STRATEGIES, "all"),
        help="parent selection: rule, random, direct, or all of them (default: the scenario's)",
    )
    for name, kind in _OVERRIDES:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    parser.add_argument("--layers-mib", dest="layers_mib", help="comma-separated layer sizes")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario) if args.scenario else Scenario()
        changes: dict[str, Any] = {
            name: getattr(args, name) for name, _ in _OVERRIDES if getattr(args, name) is not None
        }
        if args.layers_mib:
            changes["layers_mib"] = [float(s) for s in args.layers_mib.split(",")]
        scenario = scenario.replace(**changes)
        strategies = STRATEGIES if args.strategy == "all" else (args.strategy or scenario.strategy,)
        runs = [scenario.replace(strategy=strategy) for strategy in strategies]
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"p2psim: {exc}", file=sys.stderr)
        return 2
    results = []
    for run in runs:
        started = time.perf_counter()  # wall time is reported, never simulated
        result = simulate(run)
        wall_s = time.perf_counter() - started
        print(summary(result, wall_s), flush=True)
        results.append({**result.to_json(), "wall_s": wall_s})
    if args.json:
        args.json.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0 if all(r["nodes_completed"] == r["nodes"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
