"""The cluster benchmark's link settings: MTU, congestion control, payload share, drops."""

from __future__ import annotations

import pytest

from bench.cluster_bench import main as cluster_main
from bench.cluster_scenarios import build_scenario, describe_rates
from bench.cluster_sim import sim_scenario
from bench.swarm_report import TCP_PAYLOAD_SHARE, tcp_payload_share, upload_drop_share


def test_payload_share_per_mtu() -> None:
    # A full segment's payload over the frame tc counts (Ethernet header included).
    assert tcp_payload_share(1500) == pytest.approx(1448 / 1514)
    assert tcp_payload_share(9000) == pytest.approx(8948 / 9014)
    assert tcp_payload_share(1500) == TCP_PAYLOAD_SHARE


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_simulator_moves_payload_at_the_mtus_share(mtu: int) -> None:
    scn = build_scenario("homogeneous", 4, 8, mtu=mtu, congestion_control="cubic")
    sim = sim_scenario(scn, [741, 8 * 1024 * 1024], "rule", 1)
    share = tcp_payload_share(mtu)
    assert sim.host_upload_bps == pytest.approx(40e6 / 8 * share)
    assert sim.registry_egress_bps == pytest.approx(80e6 / 8 * share)
    mixed = sim_scenario(build_scenario("mixed", 4, 8, mtu=mtu), [741], "rule", 1)
    assert [gbps for gbps, _ in mixed.nic_mix_gbps] == pytest.approx([0.08 * share, 0.04 * share])


def test_scenario_reports_its_link_settings() -> None:
    scn = build_scenario("racks", 4, 8, mtu=9000, congestion_control="cubic")
    assert scn.to_json()["mtu"] == 9000
    assert scn.to_json()["tcp_congestion_control"] == "cubic"
    assert "MTU 9000, TCP congestion control cubic" in describe_rates(scn)
    host = build_scenario("homogeneous", 4, 8)
    assert host.mtu == 1500 and host.to_json()["tcp_congestion_control"] == "the host's default"


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


@pytest.mark.parametrize("mtu", ["100", "70000"])
def test_mtu_out_of_range_is_refused(mtu: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster_main(["--mtu", mtu]) == 2
    assert "--mtu must be between 576 and 65535" in capsys.readouterr().err
