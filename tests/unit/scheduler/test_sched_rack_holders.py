"""Pieces a rack holds stay in the rack (scheduler.core.rack_holders): a claim on a piece
a rack-mate can serve is not granted, and that rack-mate becomes the claimant's parent."""

from __future__ import annotations

from scheduler.core import SchedulerSettings
from tests.unit.scheduler.swarm import Swarm, check_invariants


def _racks(settings: SchedulerSettings | None = None) -> Swarm:
    """Rack r1 with the claimant "a"; a full peer in rack r2 it imports from."""
    swarm = Swarm(settings)
    swarm.full("far", rack="r2")
    swarm.peer("a", rack="r1")
    return swarm


def test_a_piece_a_rack_mate_holds_comes_from_that_rack_mate() -> None:
    swarm = _racks()
    swarm.peer("b", rack="r1", pieces=[1, 2])
    answer = swarm.state.claim_imports("a", [0, 1, 2], [], swarm.now)
    assert answer.granted == [0]
    assert answer.claimed == [1, 2]  # left to rack-mates
    assert [holder.peer_id for holder in answer.holders] == ["b"]
    assert not answer.holders[0].other_rack
    assert answer.in_rack == 2
    assert list(swarm.state.peers["a"].parents) == ["b"]
    check_invariants(swarm.state)
    # Named once: the next claim finds b among a's parents and links nobody new.
    again = swarm.state.claim_imports("a", [1], [], swarm.now)
    assert (again.granted, again.claimed, again.holders, again.in_rack) == ([], [1], (), 1)


def test_the_rack_mate_with_the_fewest_children_is_linked() -> None:
    swarm = _racks(SchedulerSettings(rack_holders_per_claim=1))
    busy = swarm.peer("busy", rack="r1", pieces=[0, 1, 2])
    swarm.peer("idle", rack="r1", pieces=[0])
    swarm.peer("other", rack="r1")
    swarm.state.claim_imports("other", [0, 1, 2], [], swarm.now)
    assert list(busy.children) == ["other"]  # holds the most, and was linked
    answer = swarm.state.claim_imports("a", [0, 1], [], swarm.now)
    assert [holder.peer_id for holder in answer.holders] == ["idle"]
    # One new parent per call at most: piece 1 is only busy's, so a imports it.
    assert answer.granted == [1]
    assert answer.in_rack == 1


def test_no_rack_mate_is_linked_without_a_free_slot_or_against_the_rules() -> None:
    swarm = _racks()
    swarm.host("h-full", rack="r1", upload_slots=1)
    full = swarm.peer("full", "h-full", pieces=[0])
    swarm.peer("c", rack="r1")
    swarm.state.claim_imports("c", [0], [], swarm.now)
    assert list(full.children) == ["c"]  # its one slot is taken now
    blocked = swarm.peer("blocked", rack="r1", pieces=[1])
    swarm.state.block_parent("a", "blocked")
    seed = swarm.peer("seed", rack="r1", seed=True, pieces=[2])
    answer = swarm.state.claim_imports("a", [0, 1, 2], [], swarm.now)
    assert answer.granted == [0, 1, 2]
    assert (answer.holders, answer.in_rack) == ((), 0)
    assert not set(swarm.state.peers["a"].parents) & {"full", blocked.peer_id, seed.peer_id}
    check_invariants(swarm.state)


def test_rack_mates_may_trade_pieces_both_ways() -> None:
    """A rack-mate downloading from the claimant is linked too (a cycle decisions never
    make); the claimant's next decision drops it again."""
    swarm = _racks()
    a = swarm.state.peers["a"]
    swarm.report("a", "far", [0])
    below = swarm.peer("below", rack="r1", pieces=[1])
    swarm.schedule("below")
    assert "a" in below.parents  # a holds piece 0, which below lacks
    answer = swarm.state.claim_imports("a", [1], [], swarm.now)
    assert [holder.peer_id for holder in answer.holders] == ["below"]
    assert "below" in a.parents
    swarm.schedule("a")
    assert "below" not in a.parents
    check_invariants(swarm.state)


def test_other_racks_and_a_zero_setting_keep_nothing_inside() -> None:
    swarm = _racks()
    swarm.peer("elsewhere", rack="r3", pieces=[0])
    assert swarm.state.claim_imports("a", [0], [], swarm.now).granted == [0]
    off = _racks(SchedulerSettings(rack_holders_per_claim=0))
    off.peer("b", rack="r1", pieces=[0])
    answer = off.state.claim_imports("a", [0], [], off.now)
    assert (answer.granted, answer.holders, answer.in_rack) == ([0], (), 0)
    assert not off.state.peers["a"].parents
