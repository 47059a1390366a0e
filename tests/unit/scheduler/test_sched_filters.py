"""Every filter reason, one table row each, through the public ``schedule`` call."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scheduler.core import FilterReason, Parents, RetryLater, SchedulerSettings
from scheduler.core.filters import Descendants, rejection_reason
from tests.unit.scheduler.swarm import PIECES, Swarm

# Each setup builds a swarm where child "c" has one candidate, "x" (and, for bad_parent,
# a good alternative "y"), and returns nothing; the row says which reason "x" must be
# rejected for.


def _self(swarm: Swarm) -> None:
    # The child holds a piece, so it is in its own candidate sample.
    swarm.peer("c", pieces=[0])


def _same_host(swarm: Swarm) -> None:
    swarm.peer("c")
    swarm.peer("x", "h-c", pieces=[0, 1])


def _blocked(swarm: Swarm) -> None:
    swarm.peer("c")
    swarm.full("x")
    swarm.state.block_parent("c", "x")


def _slow_x(swarm: Swarm) -> None:
    swarm.peer("c")
    swarm.full("x")
    swarm.peer("other", "h-c")  # reports the costs; same host as c, so never c's parent
    swarm.report("other", "x", [0], cost_s=1.0)
    swarm.report("other", "x", [1], cost_s=25.0)  # > 20x the mean of the one before


def _bad_parent(swarm: Swarm) -> None:
    _slow_x(swarm)
    swarm.full("y")  # a slow parent is passed over only while another will do


def _nothing_needed(swarm: Swarm) -> None:
    swarm.peer("c", pieces=[0, 1, 2])
    swarm.peer("x", pieces=[1, 2])


def _other_rack(swarm: Swarm) -> None:
    swarm.state.settings = SchedulerSettings(rack_gateways=1)
    swarm.peer("gateway", rack="r1")  # first in r1: the rack's gateway, not c
    swarm.peer("c", rack="r1")
    swarm.full("x", rack="r2")


def _no_upload_slot(swarm: Swarm) -> None:
    swarm.peer("c")
    swarm.full("x", upload_slots=0)


def _cycle(swarm: Swarm) -> None:
    # x downloads from c (c holds piece 0); c asks for parents and x is the only other
    # holder: taking x would close the loop c -> x -> c.
    swarm.peer("c", pieces=[0])
    swarm.peer("x", pieces=[1])
    swarm.state.block_parent("x", "ignored")
    decision = swarm.schedule("x")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["c"]


CASES: list[tuple[FilterReason, Callable[[Swarm], None]]] = [
    (FilterReason.SELF, _self),
    (FilterReason.SAME_HOST, _same_host),
    (FilterReason.BLOCKED, _blocked),
    (FilterReason.BAD_PARENT, _bad_parent),
    (FilterReason.NOTHING_NEEDED, _nothing_needed),
    (FilterReason.OTHER_RACK, _other_rack),
    (FilterReason.NO_UPLOAD_SLOT, _no_upload_slot),
    (FilterReason.CYCLE, _cycle),
]


@pytest.mark.parametrize(("reason", "setup"), CASES, ids=[str(r) for r, _ in CASES])
def test_each_reason_is_named_in_the_decision(
    reason: FilterReason, setup: Callable[[Swarm], None]
) -> None:
    swarm = Swarm()
    setup(swarm)
    decision = swarm.schedule("c")
    chosen = [p.peer_id for p in decision.parents] if isinstance(decision, Parents) else []
    assert chosen == (["y"] if reason is FilterReason.BAD_PARENT else [])
    rejected = {r.peer_id: r.reason for r in decision.rejected}
    candidate = "c" if reason is FilterReason.SELF else "x"
    assert rejected[candidate] is reason


def test_every_reason_has_a_row() -> None:
    assert {reason for reason, _ in CASES} == set(FilterReason)


def test_a_candidate_passing_every_filter_becomes_a_parent() -> None:
    swarm = Swarm()
    swarm.peer("c", pieces=[0])
    swarm.peer("x", pieces=[0, 1])
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["x"]
    assert [r.peer_id for r in decision.rejected] == ["c"]


def test_reasons_are_checked_in_order_and_the_first_one_wins() -> None:
    swarm = Swarm()
    child = swarm.peer("c", pieces=range(PIECES))
    # Same host, blocked, with nothing the child needs and no slot: "same_host" is named.
    candidate = swarm.peer("x", "h-c", pieces=[0])
    child.blocked_parent_ids.add("x")
    child.host.upload_slots = 0
    reason = rejection_reason(child, candidate, Descendants(child), 0.0, 30.0)
    assert reason is FilterReason.SAME_HOST


def test_a_current_parent_keeps_its_slot_for_its_child() -> None:
    swarm = Swarm()
    swarm.peer("c")
    swarm.full("x", upload_slots=1)
    first = swarm.schedule("c")
    assert isinstance(first, Parents)
    assert not swarm.state.peers["x"].has_free_upload_slot
    # Asking again: x's only slot is c's own, so x is offered again.
    again = swarm.schedule("c")
    assert isinstance(again, Parents)
    assert [p.peer_id for p in again.parents] == ["x"]
    assert swarm.state.hosts["h-x"].children_count == 1


def test_a_full_parent_is_skipped_for_other_children() -> None:
    swarm = Swarm()
    swarm.full("x", upload_slots=1)
    swarm.peer("c1")
    swarm.peer("c2")
    assert isinstance(swarm.schedule("c1"), Parents)
    decision = swarm.schedule("c2")
    assert isinstance(decision, RetryLater)
    assert [(r.peer_id, r.reason) for r in decision.rejected] == [
        ("x", FilterReason.NO_UPLOAD_SLOT)
    ]


def test_bad_parent_filter_uses_the_settings_ttl() -> None:
    swarm = Swarm(SchedulerSettings(bad_parent_ttl_s=10.0))
    _bad_parent(swarm)
    first = swarm.schedule("c")
    assert isinstance(first, Parents)
    assert [p.peer_id for p in first.parents] == ["y"]
    swarm.now = 10.0  # the verdict expired: x may be tried again
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert sorted(p.peer_id for p in decision.parents) == ["x", "y"]
    assert FilterReason.BAD_PARENT not in {r.reason for r in decision.rejected}


def test_a_slow_parent_is_used_when_no_other_candidate_will_do() -> None:
    # x looks slow, but nobody else has what c needs: waiting for the flag to expire
    # would stall c (and, were x the only holder of some pieces, the whole task).
    swarm = Swarm(SchedulerSettings(bad_parent_ttl_s=30.0))
    _slow_x(swarm)
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["x"]
    assert FilterReason.BAD_PARENT not in {r.reason for r in decision.rejected}


def test_a_slow_parent_used_as_a_last_resort_still_passes_the_other_filters() -> None:
    swarm = Swarm(SchedulerSettings(bad_parent_ttl_s=30.0))
    _slow_x(swarm)
    swarm.state.block_parent("c", "x")  # blocked comes before bad_parent: still out
    decision = swarm.schedule("c")
    assert isinstance(decision, RetryLater)
    assert ("x", FilterReason.BLOCKED) in [(r.peer_id, r.reason) for r in decision.rejected]


def test_upload_slots_count_per_task() -> None:
    # One slot on h-x: a child of one blob does not take it from a child of another.
    other = "sha256:" + "cd" * 32
    swarm = Swarm()
    swarm.host("h-x", upload_slots=1)
    swarm.peer("x", "h-x", pieces=range(PIECES))
    swarm.peer("x2", "h-x", pieces=range(PIECES), task=other)
    swarm.peer("c1")
    swarm.peer("c2", task=other)
    swarm.peer("c3")
    assert [p.peer_id for p in swarm.schedule("c1").parents] == ["x"]  # type: ignore[union-attr]
    assert [p.peer_id for p in swarm.schedule("c2").parents] == ["x2"]  # type: ignore[union-attr]
    third = swarm.schedule("c3")
    assert isinstance(third, RetryLater)
    assert FilterReason.NO_UPLOAD_SLOT in {r.reason for r in third.rejected}
