"""The p2psim command line: summaries, JSON, plots, progress, overrides, compare."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from simulations import cli
from simulations.compare import bootstrap_mean, compare, comparison_table, run_all
from simulations.progress import Progress
from simulations.report import RunResult
from simulations.scenario import STRATEGIES, Scenario

TINY = ["--nodes", "12", "--layers-mib", "8,16", "--no-progress"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cli_prints_a_summary_a_table_with_the_bound_and_writes_json_and_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "run.json", tmp_path / "cdf.png"
    code = cli.main([*TINY, "--strategy", "all", "--json", str(out), "--plot", str(plot)])
    assert code == 0
    text = capsys.readouterr().out
    for word in ("makespan", "p99", "registry bytes", "cross-rack bytes", "makespan/bound"):
        assert word in text
    rows = [line.split()[0] for line in text.splitlines() if line.split()]
    assert [s for s in rows if s in (*STRATEGIES, "bound")][-len(STRATEGIES) - 1 :] == [
        *STRATEGIES,
        "bound",
    ]
    runs = json.loads(out.read_text())
    assert [run["strategy"] for run in runs] == list(STRATEGIES)
    assert all(run["makespan_over_bound"] >= 1.0 for run in runs)
    assert set(RunResult.__dataclass_fields__) - {"completion_times_s"} <= set(runs[0])
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_every_scenario_key_is_a_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    values = {
        "name": "flags",
        "nodes": "5",
        "seed": "3",
        "host_upload_bps": "1e9",
        "host_download_bps": "1e9",
        "hosts_per_rack": "2",
        "oversubscription": "2",
        "registry_egress_bps": "2e9",
        "registry_max_transfers": "50",
        "sharing": "exact",
        "rise_tolerance": "0",
        "schedule_latency_s": "0.001",
        "request_latency_s": "0.002",
        "upload_slots": "3",
        "pieces_in_flight": "4",
        "max_per_parent": "2",
        "origin_concurrency": "2",
        "announce_interval_s": "5",
        "rack_gateways": "1",
        "rack_congestion_ratio": "3",
        "rack_stripes": "4",
        "rack_claim_lease_s": "5",
        "rack_claim_hold_factor": "2",
        "rack_holders_per_claim": "2",
        "origin_sharers_per_rack": "2",
        "layer_concurrency": "2",
        "seed_peers": "1",
        "nic_mix_gbps": "1:1,10:3",
        "straggler_fraction": "0.2",
        "straggler_factor": "0.5",
        "churn_fraction": "0.2",
        "churn_from_s": "0.1",
        "churn_until_s": "0.2",
        "layers_mib": "4,2",
        "arrival_spread_s": "0.5",
        "max_sim_time_s": "100",
        "model_path": "",  # the learned strategy's model; empty: the shipped one
        "rule_weights": "",  # the tuned strategy's weights; empty: the committed ones
    }
    fields = {f.name for f in dataclasses.fields(Scenario)} - {"strategy"}
    assert set(values) == fields  # a new key must get a flag and a line here
    argv = [arg for key, value in values.items() for arg in ("--" + key.replace("_", "-"), value)]
    assert cli.main([*argv, "--strategy", "kraken", "--json", str(out), "--no-progress"]) == 0
    run = json.loads(out.read_text())
    assert (run["scenario"], run["strategy"], run["seed"], run["nodes"]) == (
        "flags",
        "kraken",
        3,
        5,
    )
    assert run["image_bytes"] == 6 * 1024 * 1024
    assert run["nodes_failed"] + run["nodes_completed"] == 5


def test_cli_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--nodes", "0"]) == 2
    assert "nodes" in capsys.readouterr().err
    assert cli.main(["--nic-mix-gbps", "fast"]) == 2
    assert cli.main(["--rack-stripes", "2.5"]) == 2
    assert "rack_stripes" in capsys.readouterr().err
    assert cli.main(["compare", "--strategies", "rule,bittorrent"]) == 2
    assert "bittorrent" in capsys.readouterr().err


def test_progress_draws_only_after_its_delay_and_when_enabled() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(True, stream, delay_s=2.0, interval_s=0.5, clock=lambda: now[0])
    progress.update("rule", 1, 10)
    assert stream.getvalue() == ""  # a short run stays quiet
    now[0] = 2.5
    progress.update("rule", 5, 10, "sim 1.0 s")
    assert "rule [##############--------------] 5/10 sim 1.0 s" in stream.getvalue()
    progress.close()
    assert stream.getvalue().endswith("\r")
    quiet = io.StringIO()
    off = Progress(False, quiet, delay_s=0.0, clock=lambda: now[0])
    off.update("rule", 1, 2)
    assert quiet.getvalue() == ""
    assert Progress.wanted(None, io.StringIO()) is False  # not a terminal
    assert Progress.wanted(True, io.StringIO()) is True


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_seeds() -> None:
    few = bootstrap_mean([1.0, 3.0, 2.0, 4.0])
    assert few.mean == pytest.approx(2.5)
    assert few.low < few.mean < few.high
    assert few.low >= 1.0 and few.high <= 4.0
    many = bootstrap_mean([1.0, 3.0, 2.0, 4.0] * 16)
    assert many.high - many.low < few.high - few.low
    assert bootstrap_mean([1.0, 3.0, 2.0, 4.0]) == few  # its own fixed stream
    one = bootstrap_mean([5.0])
    assert (one.low, one.mean, one.high) == (5.0, 5.0, 5.0)


def test_compare_pairs_each_strategy_with_the_baseline_on_the_same_seeds() -> None:
    # A slow registry, so ten direct pulls of the image clearly take longer than P2P.
    scenario = Scenario(
        name="cmp", nodes=10, hosts_per_rack=5, layers_mib=(4.0, 8.0), registry_egress_bps=5e7
    )
    comparison = compare(scenario, ["random", "direct"], "rule", range(3))
    assert [row.strategy for row in comparison.rows] == ["rule", "random", "direct"]
    assert comparison.seeds == (0, 1, 2)
    for strategy, runs in comparison.runs.items():
        assert [run.seed for run in runs] == [0, 1, 2]
        assert all(run.strategy == strategy for run in runs)
    rule, _, direct = comparison.rows
    assert (rule.makespan_diff.low, rule.makespan_diff.high) == (0.0, 0.0)
    paired = [
        d.makespan_s - r.makespan_s
        for d, r in zip(comparison.runs["direct"], comparison.runs["rule"], strict=True)
    ]
    assert direct.makespan_diff.mean == pytest.approx(sum(paired) / 3)
    assert direct.makespan_diff.low > 0  # direct pulls are slower, clearly
    table = comparison_table(comparison)
    assert table.splitlines()[-1].split()[0] == "bound"


def test_compare_pairs_the_p99_node_completion_too() -> None:
    # 40 nodes, so the p99 (the 40th time) is not the p95 (the 38th).
    scenario = Scenario(
        name="p99", nodes=40, hosts_per_rack=10, layers_mib=(4.0, 8.0), registry_egress_bps=5e7
    )
    comparison = compare(scenario, ["direct"], "rule", range(3))
    rule, direct = comparison.runs["rule"], comparison.runs["direct"]
    assert all(r.completion_p99_s > r.completion_p95_s for r in rule)
    row = comparison.rows[1]
    assert row.p99_s == pytest.approx(sum(r.completion_p99_s for r in direct) / 3)
    paired = [d.completion_p99_s - r.completion_p99_s for d, r in zip(direct, rule, strict=True)]
    assert row.p99_diff.mean == pytest.approx(sum(paired) / 3)
    assert row.p99_diff.low <= row.p99_diff.mean <= row.p99_diff.high
    relative = [
        100 * (d.completion_p99_s / r.completion_p99_s - 1)
        for d, r in zip(direct, rule, strict=True)
    ]
    assert row.p99_rel_pct.mean == pytest.approx(sum(relative) / 3)
    assert row.p99_rel_pct.low > 0  # direct pulls from a slow registry: clearly slower
    assert row.p99_over_bound == pytest.approx(
        sum(d.completion_p99_s / d.lower_bound_s for d in direct) / 3
    )
    assert comparison.rows[0].p99_rel_pct == comparison.rows[0].p99_diff  # all zeros
    header, first = comparison_table(comparison).splitlines()[1:3]
    assert "p99_s" in header and "d_p99 [95% CI]" in header
    assert first.split()[0] == "rule" and "+0.0% [+0.0, +0.0]" in first


def test_runs_in_parallel_processes_equal_runs_in_one(tmp_path: Path) -> None:
    plan = [Scenario(name="par", nodes=8, layers_mib=(4.0,), seed=s) for s in range(3)]
    assert run_all(plan, jobs=2) == run_all(plan, jobs=1)


def test_compare_command_writes_table_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "cmp.json", tmp_path / "cmp.png"
    argv = ["compare", *TINY, "--seeds", "2", "--strategies", "rule,kraken,direct"]
    assert cli.main([*argv, "--jobs", "1", "--json", str(out), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "95% bootstrap CI" in text and "kraken" in text
    data = json.loads(out.read_text())
    assert [s["strategy"] for s in data["strategies"]] == ["rule", "kraken", "direct"]
    assert len(data["strategies"][1]["runs"]) == 2
    assert set(data["strategies"][1]["makespan_diff_s"]) == {"mean", "ci95_low", "ci95_high"}
    for key in ("completion_p99_diff_s", "completion_p99_diff_pct", "makespan_diff_pct"):
        assert set(data["strategies"][1][key]) == {"mean", "ci95_low", "ci95_high"}
    assert data["command"].startswith("p2psim compare --nodes 12")
    assert {"created_at", "code_revision", "code_modified"} <= set(data)
    assert plot.read_bytes().startswith(PNG_MAGIC)
