"""The cluster benchmark's TCP congestion control setting and its shapers' drop share."""

from __future__ import annotations

import pytest

from bench.cluster_scenarios import build_scenario, describe_rates
from bench.swarm_report import upload_drop_share


def test_scenario_reports_its_congestion_control() -> None:
    scn = build_scenario("racks", 4, 8, congestion_control="cubic")
    assert scn.to_json()["tcp_congestion_control"] == "cubic"
    assert "TCP congestion control cubic" in describe_rates(scn)
    host = build_scenario("homogeneous", 4, 8)
    assert host.to_json()["tcp_congestion_control"] == "the host's default"
    assert "TCP congestion control the host's default" in describe_rates(host)


def test_upload_drop_share_counts_peer_and_seed_uploads_only() -> None:
    entry = {
        "qdiscs": {
            "registry up": {"bytes": 1, "packets": 1000, "drops": 500},
            "seed up": {"bytes": 1, "packets": 300, "drops": 0},
            "peer00 up": {"bytes": 1, "packets": 600, "drops": 100},
            "peer00 down": {"bytes": 1, "packets": 900, "drops": 900},
        }
    }
    assert upload_drop_share(entry) == pytest.approx(100 / 1000)
    # Older reports had no packet counts: no share rather than a wrong one.
    del entry["qdiscs"]["seed up"]["packets"]
    assert upload_drop_share(entry) is None
    assert upload_drop_share({"qdiscs": {}}) is None
