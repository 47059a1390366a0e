"""Replica membership from heartbeats: expiry, and a Redis outage, on injected clocks."""

from __future__ import annotations

import pytest

from scheduler.service.membership import Membership

TTL_S = 5.0
A, B, C = "http://a:8002", "http://b:8002", "http://c:8002"
# Redis's clock and the replica's monotonic clock are unrelated: far apart on purpose.
STORE_EPOCH = 1_700_000_000.0


def _store(t: float) -> float:
    return STORE_EPOCH + t


def test_replicas_with_fresh_heartbeats_are_live() -> None:
    members = Membership(TTL_S)
    members.observe({A: _store(9.0), B: _store(10.0)}, _store(10.0), now=100.0)
    assert members.live() == [A, B]
    assert members.heartbeat_age_s(A, 100.0) == pytest.approx(1.0)
    assert members.heartbeat_age_s(C, 100.0) is None


def test_a_replica_is_dropped_ttl_after_its_last_heartbeat() -> None:
    members = Membership(TTL_S)
    members.observe({A: _store(0.0), B: _store(0.0)}, _store(0.0), now=100.0)
    # B stops heartbeating at store time 0 (local 100); A goes on.
    members.observe({A: _store(4.9), B: _store(0.0)}, _store(4.9), now=104.9)
    assert members.live() == [A, B]
    members.observe({A: _store(5.0), B: _store(0.0)}, _store(5.0), now=105.0)
    assert members.live() == [A]


def test_a_stale_heartbeat_never_lists_a_replica() -> None:
    members = Membership(TTL_S)
    members.observe({A: _store(10.0), C: _store(4.0)}, _store(10.0), now=0.0)
    assert members.live() == [A]


def test_a_late_observation_does_not_extend_a_replica() -> None:
    # Heartbeats read late (the read was slow) count from when they were written.
    members = Membership(TTL_S)
    members.observe({A: _store(0.0)}, _store(3.0), now=3.0)
    members.observe({}, _store(4.99), now=4.99)
    assert members.live() == [A]
    members.observe({}, _store(5.0), now=5.0)
    assert members.live() == []


def test_nothing_expires_while_the_store_is_unreachable() -> None:
    members = Membership(TTL_S)
    members.observe({A: _store(0.0), B: _store(0.0)}, _store(0.0), now=0.0)
    members.store_lost()
    assert members.is_store_lost
    # No observation comes while Redis is down, however long: the list is frozen.
    assert members.live() == [A, B]


def test_after_a_redis_restart_known_replicas_get_one_ttl_to_come_back() -> None:
    members = Membership(TTL_S)
    members.observe({A: _store(0.0), B: _store(0.0)}, _store(0.0), now=0.0)
    members.store_lost()
    # Redis is back 60 s later, empty but for A's first heartbeat.
    members.observe({A: _store(0.0)}, _store(0.0), now=60.0)
    assert not members.is_store_lost
    assert members.live() == [A, B]
    members.observe({A: _store(4.0), B: _store(3.0)}, _store(4.0), now=64.0)
    assert members.live() == [A, B]
    # C was never known; B heartbeats again and stays; a replica that never comes back
    # is dropped one TTL after Redis returned.
    members.store_lost()
    members.observe({A: _store(100.0)}, _store(100.0), now=70.0)
    members.observe({A: _store(104.0)}, _store(104.0), now=74.9)
    assert members.live() == [A, B]
    members.observe({A: _store(105.0)}, _store(105.0), now=75.0)
    assert members.live() == [A]
