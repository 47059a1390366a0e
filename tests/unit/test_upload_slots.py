"""Upload slots sized from the upload capacity: the peer's default, and p2psim's."""

from __future__ import annotations

import pytest

from peer.config import ConfigError, PeerConfig
from peer.upload_slots import upload_slots_for
from simulations.scenario import GBPS, Scenario, ScenarioError
from simulations.swarm import Swarm

MBIT = 1e6 / 8  # bytes per second


@pytest.mark.parametrize(
    ("capacity_bps", "slots"),
    [
        (0.0, 4),
        (20 * MBIT, 4),
        (40 * MBIT, 4),  # the cluster benchmark's uplinks
        (60 * MBIT, 6),
        (76 * MBIT, 8),  # p2psim's payload share of an 80 Mbit/s shaper
        (80 * MBIT, 8),
        (1.25e9, 8),  # the default capacity, 10 Gbit/s
    ],
)
def test_one_slot_per_ten_megabits_between_four_and_eight(capacity_bps: float, slots: int) -> None:
    assert upload_slots_for(capacity_bps) == slots


def test_the_peer_follows_its_capacity_unless_told_a_count() -> None:
    assert PeerConfig().upload_slot_count == 8
    assert PeerConfig(upload_capacity_bps=5e6).upload_slot_count == 4
    assert PeerConfig(upload_capacity_bps=5e6, upload_slots=6).upload_slot_count == 6
    with pytest.raises(ConfigError, match="upload_slots"):
        PeerConfig(upload_slots=-1)


def _announced_slots(scenario: Scenario) -> dict[float, set[int]]:
    swarm = Swarm(scenario)
    swarm.run()
    assert swarm.state is not None
    slots: dict[float, set[int]] = {}
    for host in swarm.state.hosts.values():
        slots.setdefault(host.upload_capacity_bps, set()).add(host.upload_slots)
    return slots


def test_p2psim_hosts_size_their_slots_as_peers_do() -> None:
    mix = Scenario(
        nodes=8,
        layers_mib=(4.0,),
        host_upload_bps=10 * GBPS,
        host_download_bps=10 * GBPS,
        nic_mix_gbps=((10.0, 0.5), (0.04, 0.5)),
    )
    by_capacity = _announced_slots(mix)
    assert by_capacity[10 * GBPS] == {8}
    assert by_capacity[0.04 * GBPS] == {4}
    fixed = _announced_slots(mix.replace(upload_slots=3))
    assert set().union(*fixed.values()) == {3}
    with pytest.raises(ScenarioError, match="upload_slots"):
        mix.replace(upload_slots=-1)
