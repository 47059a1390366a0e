"""The shipped Prometheus configurations and rules pass promtool, and the rules do what
their unit tests (deploy/prometheus/tests) say: alerts fire on bad data only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peer.config import PeerConfig
from scheduler.service.config import SchedulerConfig
from tests.support.prometheus import PROMETHEUS_DIR, prometheus_unavailable_reason, promtool
from tests.support.requirements import require

CONFIGS = ["prometheus.yml", "prometheus-kubernetes.yml"]
JOBS = {"p2p-peer", "p2p-scheduler"}


@pytest.fixture(autouse=True)
def _promtool() -> None:
    require(prometheus_unavailable_reason())


@pytest.mark.parametrize("name", CONFIGS)
def test_promtool_accepts_the_configuration(name: str) -> None:
    result = promtool("check", "config", name)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == JOBS
    assert config["rule_files"] == ["rules/starling.rules.yml"]


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", "rules/starling.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", "tests/starling.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    # The unit tests can fail: the same scheduler outage, expecting silence.
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests" / "starling.rules.test.yml").read_text())
    outage = tests["tests"][0]
    outage["alert_rule_test"] = [
        {"eval_time": "4m", "alertname": "StarlingSchedulerDown", "exp_alerts": []}
    ]
    tests["tests"] = [outage]
    tests["rule_files"] = [str(PROMETHEUS_DIR / "rules" / "starling.rules.yml")]
    wrong = tmp_path / "wrong.test.yml"
    wrong.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(wrong))
    assert result.returncode != 0
    assert "StarlingSchedulerDown" in result.stdout + result.stderr


def test_example_targets_use_the_default_ports() -> None:
    def ports(name: str) -> set[int]:
        groups = yaml.safe_load((PROMETHEUS_DIR / "targets" / name).read_text())
        return {int(t.rsplit(":", 1)[1]) for g in groups for t in g["targets"]}

    # Peers are scraped on the piece server; the scheduler on its API port.
    assert ports("p2p-peer.yml") == {PeerConfig().piece_port}
    assert ports("p2p-scheduler.yml") == {SchedulerConfig().listen_port}
