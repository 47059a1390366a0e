"""Transfer records from simulated runs: the learned evaluator's training data.

The simulated scheduler is the real core, so its records come from the same
``scheduler.core.transfers.TransferRecorder`` the service uses: feature snapshots taken
when a parent was chosen (from what the core observed, never the network model's truth)
joined with the pieces the simulated children reported. One file per run,
``<scenario>-<strategy>-seed<N>.jsonl`` in the records directory; each run is its own
cluster (``sim/<scenario>/seed-<N>``) so training can hold whole runs out.

``p2psim --records DIR`` writes them; ``p2pctl model train --records DIR`` reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import IO

from scheduler.core.transfers import TransferRecorder
from simulations.report import RunResult, result_of
from simulations.scenario import Scenario
from simulations.swarm import Swarm

# Records are written out every few thousand simulated events (and at the end), so a
# long run never holds all of them; the recorder's own bound is only a safety net.
MAX_PENDING = 1_000_000


def cluster_name(scenario: Scenario) -> str:
    return f"sim/{scenario.name}/seed-{scenario.seed}"


def records_path(directory: Path, scenario: Scenario) -> Path:
    return directory / f"{scenario.name}-{scenario.strategy}-seed{scenario.seed}.jsonl"


def simulate_recording(
    scenario: Scenario,
    directory: Path,
    on_tick: Callable[[Swarm], None] | None = None,
) -> tuple[RunResult, int]:
    """Run the scenario writing its transfer records; the result and the record count."""
    swarm = Swarm(scenario)
    state = swarm.state
    if state is None:  # direct pulls: no scheduler, no parents, nothing to record
        swarm.run()
        return result_of(swarm), 0
    recorder = TransferRecorder(cluster_name(scenario), max_pending=MAX_PENDING)
    state.recorder = recorder
    directory.mkdir(parents=True, exist_ok=True)
    path = records_path(directory, scenario)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as fh:

        def tick() -> None:
            _write(fh, recorder)
            if on_tick is not None:
                on_tick(swarm)

        swarm.queue.on_tick = tick
        swarm.run()
        _write(fh, recorder)
    # Whole files only: a run that crashed leaves no half file for training to read.
    partial.replace(path)
    if recorder.dropped:
        raise RuntimeError(f"{recorder.dropped} records dropped: the buffer was not drained")
    return result_of(swarm), recorder.recorded


def _write(fh: IO[str], recorder: TransferRecorder) -> None:
    records = recorder.drain()
    if records:
        fh.write("".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in records))
