"""Traces of simulated runs: recording changes nothing, files round-trip, the core replays.

The replay through the scheduler service over HTTP is
``tests/integration/test_sim_service_parity.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations import cli
from simulations.report import result_of, simulate
from simulations.scenario import Scenario
from simulations.swarm import Swarm
from simulations.trace import (
    EventStep,
    ScheduleStep,
    SpreadStep,
    Step,
    Trace,
    TraceError,
    mismatches,
    read_trace,
    record,
    replay_core,
    trace_run,
    write_trace,
)

TINY = Scenario(
    name="tiny",
    nodes=8,
    seed=5,
    hosts_per_rack=4,
    layers_mib=(2.0, 6.0),
    seed_peers=1,
    churn_fraction=0.25,
    churn_from_s=0.01,
    churn_until_s=0.1,
)
TINY_FLAGS = [
    "--name", "tiny", "--nodes", "8", "--seed", "5", "--hosts-per-rack", "4",
    "--layers-mib", "2,6", "--seed-peers", "1", "--churn-fraction", "0.25",
    "--churn-from-s", "0.01", "--churn-until-s", "0.1", "--no-progress",
]  # fmt: skip


def test_recording_changes_nothing_in_the_run() -> None:
    swarm = Swarm(TINY)
    steps: list[Step] = []
    record(swarm, steps.append)
    swarm.run()
    assert result_of(swarm) == simulate(TINY)
    assert sum(isinstance(step, ScheduleStep) for step in steps) == sum(
        swarm.counters.decisions.values()
    )


def test_a_trace_round_trips_through_its_file_and_replays_into_the_core(tmp_path: Path) -> None:
    trace = trace_run(TINY)
    kinds = {type(s.event if isinstance(s, EventStep) else s).__name__ for s in trace.steps}
    assert {"HostAnnounced", "PeerRegistered", "PiecesReported", "ScheduleStep"} <= kinds
    assert {"PeerFinished", "HostExpired", "SpreadStep"} <= kinds
    path = tmp_path / "run.jsonl"
    write_trace(trace, path)
    again = read_trace(path)
    assert again == trace
    assert Scenario().replace(**again.header.scenario) == TINY
    assert mismatches(replay_core(again)) == []


def test_a_replay_reports_where_it_differs() -> None:
    trace = trace_run(TINY)
    index, spread = next(
        (i, s) for i, s in enumerate(trace.steps) if isinstance(s, SpreadStep) and s.spread
    )
    trace.steps[index] = SpreadStep(spread.t, spread.task_id, (*spread.spread[:-1], 99))
    found = mismatches(replay_core(trace))
    assert len(found) == 1 and found[0].startswith(f"step {index} (spread at t=")


def test_another_scheduler_seed_gives_other_decisions() -> None:
    trace = trace_run(TINY.replace(seed_peers=0, nodes=12))
    header = trace.header
    other = Trace(type(header)(header.scenario, header.rng_seed + 1, header.settings), trace.steps)
    assert mismatches(replay_core(other)) != []


def test_only_runs_through_the_scheduler_before_they_start_are_traced() -> None:
    with pytest.raises(TraceError, match="nothing to trace"):
        record(Swarm(TINY.replace(strategy="direct")), lambda step: None)
    swarm = Swarm(TINY)
    swarm.run()
    with pytest.raises(TraceError, match="before the run"):
        record(swarm, lambda step: None)
    with pytest.raises(TraceError, match="only the simulator"):
        list(replay_core(trace_run(TINY.replace(strategy="kraken"))))


def test_cli_writes_the_trace_of_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.trace.jsonl"
    assert cli.main([*TINY_FLAGS, "--trace", str(path)]) == 0
    assert "trace: " in capsys.readouterr().err
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["trace"] == "p2psim"
    assert read_trace(path) == trace_run(TINY)
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    "flags", [["--strategy", "all"], ["--strategy", "direct"], ["--records", "records"]]
)
def test_cli_traces_one_run_of_the_scheduler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    path = tmp_path / "run.trace.jsonl"
    assert cli.main([*TINY_FLAGS, *flags, "--trace", str(path)]) == 2
    assert "--trace records one run" in capsys.readouterr().err
    assert not path.exists()
