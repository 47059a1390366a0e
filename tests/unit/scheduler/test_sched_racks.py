"""Rack gateways (SchedulerSettings.rack_gateways): a piece crosses into a rack about once.

With the setting on, only the first few normal peers of a task in each rack take
parents from other racks; the others fetch inside the rack or from seed peers, until
they have waited ``rack_gateway_patience`` "retry later" answers.
"""

from __future__ import annotations

from scheduler.core import FilterReason, Parents, RetryLater, SchedulerSettings
from tests.unit.scheduler.swarm import Swarm, check_invariants

GATED = SchedulerSettings(rack_gateways=1, rack_gateway_patience=3)


def _parents(decision: object) -> list[str]:
    assert isinstance(decision, Parents), decision
    return sorted(p.peer_id for p in decision.parents)


def _other_rack_rejections(decision: object) -> set[str]:
    assert isinstance(decision, Parents | RetryLater)
    return {r.peer_id for r in decision.rejected if r.reason is FilterReason.OTHER_RACK}


def test_only_the_racks_first_peer_takes_parents_from_another_rack() -> None:
    swarm = Swarm(GATED)
    swarm.full("far", rack="r2")
    swarm.peer("first", rack="r1")
    swarm.peer("second", rack="r1")
    assert _parents(swarm.schedule("first")) == ["far"]
    waiting = swarm.schedule("second")
    assert isinstance(waiting, RetryLater)
    assert _other_rack_rejections(waiting) == {"far"}
    # Once the gateway holds pieces, the rack feeds itself from it.
    swarm.report("first", "far", [0, 1])
    assert _parents(swarm.schedule("second")) == ["first"]
    check_invariants(swarm.state)


def test_seed_peers_serve_every_rack() -> None:
    swarm = Swarm(GATED)
    swarm.full("seed", rack="seeds", seed=True)
    swarm.full("far", rack="r2")
    swarm.peer("first", rack="r1")
    swarm.peer("second", rack="r1")
    decision = swarm.schedule("second")
    assert _parents(decision) == ["seed"]
    assert _other_rack_rejections(decision) == {"far"}


def test_the_next_peer_in_line_becomes_the_gateway_when_the_first_leaves() -> None:
    swarm = Swarm(GATED)
    swarm.full("far", rack="r2")
    swarm.peer("first", rack="r1")
    swarm.peer("second", rack="r1")
    swarm.peer("third", rack="r1")
    assert isinstance(swarm.schedule("second"), RetryLater)
    swarm.state.remove_peer("first")
    assert _parents(swarm.schedule("second")) == ["far"]
    assert isinstance(swarm.schedule("third"), RetryLater)
    check_invariants(swarm.state)


def test_a_peer_kept_waiting_long_enough_goes_to_other_racks() -> None:
    swarm = Swarm(GATED)
    swarm.full("far", rack="r2")
    swarm.peer("first", rack="r1")
    swarm.peer("second", rack="r1")
    for _ in range(GATED.rack_gateway_patience):
        assert isinstance(swarm.schedule("second"), RetryLater)
    assert _parents(swarm.schedule("second")) == ["far"]


def test_more_gateways_let_more_peers_of_a_rack_out() -> None:
    swarm = Swarm(SchedulerSettings(rack_gateways=2))
    swarm.full("far", rack="r2")
    for name in ("a", "b", "c"):
        swarm.peer(name, rack="r1")
    assert _parents(swarm.schedule("a")) == ["far"]
    assert _parents(swarm.schedule("b")) == ["far"]
    assert isinstance(swarm.schedule("c"), RetryLater)


def test_off_by_default_and_never_for_hosts_without_a_rack() -> None:
    swarm = Swarm()
    swarm.full("far", rack="r2")
    swarm.peer("first", rack="r1")
    swarm.peer("second", rack="r1")
    assert _parents(swarm.schedule("second")) == ["far"]

    unlabelled = Swarm(GATED)
    unlabelled.full("far", rack="r2")
    unlabelled.peer("first")
    unlabelled.peer("second")
    assert _parents(unlabelled.schedule("second")) == ["far"]


def test_a_host_moving_racks_joins_the_end_of_its_new_racks_line() -> None:
    swarm = Swarm(GATED)
    swarm.full("far", rack="r2")
    swarm.peer("first", rack="r1")
    swarm.peer("mover", rack="r3")  # r3's gateway, for now
    swarm.peer("second", rack="r3")
    assert _parents(swarm.schedule("mover")) == ["far"]
    swarm.host("h-mover", rack="r1")  # announced again, now in r1 behind "first"
    check_invariants(swarm.state)
    assert isinstance(swarm.schedule("mover"), RetryLater)
    # r3's line moved up: "second" is its gateway now.
    assert _parents(swarm.schedule("second")) == ["far"]
