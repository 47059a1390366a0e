"""Host announcements, topology changes and expiry (which takes the host's peers along)."""

from __future__ import annotations

import pytest

from scheduler.core import (
    HostExpired,
    Parents,
    PeerRegistered,
    SchedulerSettings,
    UnknownHostError,
    UnknownPeerError,
)
from tests.unit.scheduler.swarm import PIECE_BYTES, TASK, Swarm, check_invariants


def test_host_expiry_removes_its_peers_and_reports_orphans() -> None:
    swarm = Swarm()
    swarm.host("big")
    swarm.full("x", "big")
    swarm.peer("y", "big", task="sha256:" + "cd" * 32)
    swarm.peer("c")
    assert isinstance(swarm.schedule("c"), Parents)

    removal = swarm.state.apply(HostExpired("big"), swarm.now)

    assert removal is not None
    assert removal.removed_host_ids == ("big",)
    assert set(removal.removed_peer_ids) == {"x", "y"}
    assert removal.orphaned_peer_ids == ("c",)
    assert "big" not in swarm.state.hosts
    assert set(swarm.state.peers) == {"c"}
    assert list(swarm.state.tasks) == [TASK]  # the other task had no peer left
    assert swarm.state.peers["c"].parents == {}
    with pytest.raises(UnknownPeerError):
        swarm.schedule("x")
    check_invariants(swarm.state)


def test_stale_hosts_expire_oldest_first_and_a_fresh_announcement_saves_a_host() -> None:
    swarm = Swarm(SchedulerSettings(host_ttl_s=10.0))
    swarm.host("a")
    swarm.now = 4.0
    swarm.host("b")
    swarm.now = 6.0
    swarm.host("a")  # a re-announces: now the freshest
    swarm.peer("p", "b")
    swarm.now = 14.0
    removal = swarm.state.expire_stale_hosts(swarm.now)
    assert removal.removed_host_ids == ("b",)
    assert removal.removed_peer_ids == ("p",)
    assert list(swarm.state.hosts) == ["a"]
    swarm.now = 16.0
    assert swarm.state.expire_stale_hosts(swarm.now).removed_host_ids == ("a",)


def test_registering_on_an_unknown_host_is_an_error() -> None:
    swarm = Swarm()
    event = PeerRegistered("p", TASK, "nowhere", 8 * PIECE_BYTES, PIECE_BYTES)
    with pytest.raises(UnknownHostError, match="unknown host 'nowhere'"):
        swarm.state.register_peer(event, 0.0)
    with pytest.raises(UnknownHostError):
        swarm.state.expire_host("nowhere")


def test_a_new_rack_label_moves_the_hosts_peers_in_the_sampling_index() -> None:
    swarm = Swarm()
    swarm.full("x", idc="dc1", rack="r1")
    task = swarm.state.tasks[TASK]
    assert set(task.holders_by_rack) == {("dc1", "r1")}
    swarm.host("h-x", idc="dc2", rack="r9")
    assert set(task.holders_by_rack) == {("dc2", "r9")}
    assert set(task.holders_by_idc) == {"dc2"}
    check_invariants(swarm.state)


def test_a_host_becoming_a_seed_updates_the_seed_counts() -> None:
    swarm = Swarm()
    swarm.peer("p")
    task = swarm.state.tasks[TASK]
    swarm.host("h-p", seed=True)
    assert task.seed_peer_count == 1
    swarm.host("h-p", seed=False)
    assert task.seed_peer_count == 0
    check_invariants(swarm.state)


def test_reannouncing_updates_address_capacity_and_load() -> None:
    swarm = Swarm()
    swarm.host("h", upload_slots=1)
    swarm.host("h", upload_slots=7, upload_count=3, upload_bps=5.0)
    host = swarm.state.hosts["h"]
    assert (host.upload_slots, host.announced_upload_count, host.announced_upload_bps) == (
        7,
        3,
        5.0,
    )
