"""Rack stripes (scheduler.core.stripes): each peer of a rack brings in its own share.

A decision marks the parents in other racks and gives the child its stripe: its rank
among its rack's normal peers in the task, in registration order, and their count.
"""

from __future__ import annotations

from scheduler.core import Parents, SchedulerSettings, Stripe
from tests.unit.scheduler.swarm import Swarm, check_invariants


def _decided(decision: object) -> Parents:
    assert isinstance(decision, Parents), decision
    return decision


def _other_rack(decision: Parents) -> dict[str, bool]:
    return {choice.peer_id: choice.other_rack for choice in decision.parents}


def test_each_peer_of_a_rack_gets_its_own_stripe_in_registration_order() -> None:
    swarm = Swarm()
    swarm.full("far", rack="r2")
    for name in ("a", "b", "c"):
        swarm.peer(name, rack="r1")
    for rank, name in enumerate(("a", "b", "c")):
        decision = _decided(swarm.schedule(name))
        assert decision.stripe == Stripe(rank, 3)
        assert _other_rack(decision) == {"far": True}
    check_invariants(swarm.state)


def test_rack_mates_and_seed_peers_are_not_marked_other_rack() -> None:
    swarm = Swarm()
    swarm.full("seed", rack="seeds", seed=True)
    swarm.full("far", rack="r2")
    swarm.full("mate", rack="r1")
    swarm.peer("child", rack="r1")
    decision = _decided(swarm.schedule("child"))
    assert _other_rack(decision) == {"seed": False, "far": True, "mate": False}
    assert decision.stripe == Stripe(1, 2)


def test_no_stripe_without_a_parent_in_another_rack() -> None:
    swarm = Swarm()
    swarm.full("seed", rack="seeds", seed=True)
    swarm.peer("a", rack="r1")
    swarm.peer("b", rack="r1")
    decision = _decided(swarm.schedule("b"))
    assert _other_rack(decision) == {"seed": False}
    assert decision.stripe is None


def test_no_stripe_alone_in_a_rack_without_a_rack_or_when_turned_off() -> None:
    alone = Swarm()
    alone.full("far", rack="r2")
    alone.peer("only", rack="r1")
    assert _decided(alone.schedule("only")).stripe is None

    unlabelled = Swarm()
    unlabelled.full("far", rack="r2")
    unlabelled.peer("a")
    unlabelled.peer("b")
    decision = _decided(unlabelled.schedule("b"))
    assert decision.stripe is None
    assert _other_rack(decision) == {"far": False}

    off = Swarm(SchedulerSettings(rack_stripes=0))
    off.full("far", rack="r2")
    off.peer("a", rack="r1")
    off.peer("b", rack="r1")
    decision = _decided(off.schedule("b"))
    assert decision.stripe is None
    assert _other_rack(decision) == {"far": True}


def test_a_big_rack_shares_its_stripes_round_robin() -> None:
    swarm = Swarm(SchedulerSettings(rack_stripes=3))
    swarm.full("far", rack="r2")
    names = ("a", "b", "c", "d", "e")
    for name in names:
        swarm.peer(name, rack="r1")
    stripes = [_decided(swarm.schedule(name)).stripe for name in names]
    assert stripes == [Stripe(0, 3), Stripe(1, 3), Stripe(2, 3), Stripe(0, 3), Stripe(1, 3)]
    assert SchedulerSettings().rack_stripes == 8


def test_stripes_close_up_when_a_rack_mate_leaves() -> None:
    swarm = Swarm()
    swarm.full("far", rack="r2")
    for name in ("a", "b", "c"):
        swarm.peer(name, rack="r1")
    swarm.state.remove_peer("a")
    assert _decided(swarm.schedule("b")).stripe == Stripe(0, 2)
    assert _decided(swarm.schedule("c")).stripe == Stripe(1, 2)
    check_invariants(swarm.state)


def test_with_gateways_only_the_gateways_share_stripes() -> None:
    swarm = Swarm(SchedulerSettings(rack_gateways=2, rack_gateway_patience=1))
    swarm.full("far", rack="r2")
    for name in ("a", "b", "c"):
        swarm.peer(name, rack="r1")
    assert _decided(swarm.schedule("a")).stripe == Stripe(0, 2)
    assert _decided(swarm.schedule("b")).stripe == Stripe(1, 2)
    # "c" may go out once it has waited, and then takes whatever it needs.
    swarm.schedule("c")
    decision = _decided(swarm.schedule("c"))
    assert _other_rack(decision) == {"far": True}
    assert decision.stripe is None

    single = Swarm(SchedulerSettings(rack_gateways=1))
    single.full("far", rack="r2")
    single.peer("a", rack="r1")
    single.peer("b", rack="r1")
    assert _decided(single.schedule("a")).stripe is None
