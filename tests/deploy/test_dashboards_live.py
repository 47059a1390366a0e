"""Every panel of every shipped Grafana dashboard shows data from a real cluster.

A real Prometheus, running the shipped configuration and rules, scrapes a real
scheduler, a seed and three peers (separate processes) while they pull an image from a
real registry; then each panel's queries go to Prometheus' HTTP API as Grafana would
send them, over the time of the test.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess
from tests.e2e.swarm_helpers import Swarm, assert_pulls, pull
from tests.support.dashboards import all_queries
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.prometheus import PrometheusProcess, has_data, prometheus_unavailable_reason
from tests.support.registry import RegistryProcess
from tests.support.requirements import require

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    layers = [12 * MiB, 3 * MiB, 1 * MiB]
    return push_image(registry.url, "ops/app", "v1", layers, seed=7, work_dir=tmp_path / "image")


def _piece_address(peer: PeerProcess) -> str:
    return f"127.0.0.1:{peer.health()['piece_port']}"


def test_every_dashboard_panel_has_data_during_a_swarm_pull(
    swarm: Swarm, image: PushedImage, tmp_path: Path
) -> None:
    require(prometheus_unavailable_reason())
    queries = all_queries()
    assert len(queries) >= 30, "the dashboards lost their panels"
    seed = swarm.join("seed", seed=True)
    peers = [swarm.join(f"peer{i}") for i in range(3)]
    nodes = [seed, *peers]
    prometheus = PrometheusProcess(
        tmp_path / "prometheus",
        {
            "p2p-scheduler": [f"127.0.0.1:{swarm.scheduler.port}"],
            # Scraped on the piece server, as the shipped configuration does.
            "p2p-peer": [_piece_address(node) for node in nodes],
        },
    ).start()
    try:
        started = time.time()
        # Every target scraped a few times before the pull, so rates see it begin.
        wait_until(
            lambda: _scalar(prometheus, "count(count_over_time(up[1m]) >= 3)") == len(nodes) + 1,
            30,
            "Prometheus to scrape every target three times",
        )
        assert _scalar(prometheus, "min(up)") == 1, prometheus.query("up")
        assert_pulls(nodes, image)
        assert pull(peers[0], image)  # again: cache hits
        served = 5 * image.total_blob_bytes
        wait_until(
            lambda: _scalar(prometheus, "sum(p2p_peer_served_bytes_total)") >= served,
            30,
            "Prometheus to scrape the counters after the pull",
        )
        missing = _queries_without_data(prometheus, queries, started)
        assert not missing, "panels without data:\n" + "\n".join(missing)
        _check_rules(prometheus)
    finally:
        prometheus.stop()


def _scalar(prometheus: PrometheusProcess, expr: str) -> float:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def _queries_without_data(
    prometheus: PrometheusProcess, queries: list[tuple[str, str, str]], started: float
) -> list[str]:
    """Queries that still return no number once rates cover the pull (polled a while)."""
    missing: list[str] = []

    def all_have_data() -> bool:
        missing.clear()
        now = time.time()
        for dashboard, panel, expr in queries:
            if not has_data(prometheus.query_range(expr, started, now, 1)):
                missing.append(f"{dashboard} / {panel}: {expr}")
        return not missing

    with contextlib.suppress(TimeoutError):  # the caller reports which
        wait_until(all_have_data, 30, "every panel to have data")
    return missing


def _check_rules(prometheus: PrometheusProcess) -> None:
    """The shipped rules loaded and evaluate cleanly; a healthy swarm raises no alert."""
    wait_until(
        lambda: all(
            rule.get("lastEvaluation", "").startswith("2") and rule["health"] == "ok"
            for group in prometheus.api("rules")["groups"]
            for rule in group["rules"]
        ),
        30,
        "every rule to be evaluated without error",
    )
    groups = prometheus.api("rules")["groups"]
    assert {g["name"] for g in groups} == {"starling-recording", "starling-alerts"}
    assert sum(len(g["rules"]) for g in groups) == 16
    alerts = prometheus.api("alerts")["alerts"]
    assert alerts == [], alerts
