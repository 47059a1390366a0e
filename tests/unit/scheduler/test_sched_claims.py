"""Rack import claims (scheduler.core.claims): one peer of a rack at a time fetches a
piece from other racks, until it releases the piece or its lease lapses."""

from __future__ import annotations

import pytest

from scheduler.core import InvalidEventError, SchedulerSettings, UnknownPeerError
from scheduler.core.claims import HOLD_MAX_S
from tests.unit.scheduler.swarm import PIECES, Swarm


def _rack(swarm: Swarm, *names: str, rack: str = "r1") -> None:
    swarm.full("far", rack="r2")
    for name in names:
        swarm.peer(name, rack=rack)


def test_a_piece_is_granted_to_one_peer_of_a_rack_at_a_time() -> None:
    swarm = Swarm()
    _rack(swarm, "a", "b")
    state = swarm.state
    assert state.claim_imports("a", [0, 1], [], swarm.now)[:2] == ([0, 1], [])
    granted, claimed = state.claim_imports("b", [1, 2], [], swarm.now)[:2]
    assert granted == [2]
    assert claimed == [0, 1]  # a's: b gets them from a
    # Claiming again what one holds keeps it.
    assert state.claim_imports("a", [1], [], swarm.now)[:2] == ([1], [2])


def test_a_released_piece_can_be_claimed_by_a_rack_mate() -> None:
    swarm = Swarm()
    _rack(swarm, "a", "b")
    state = swarm.state
    state.claim_imports("a", [3], [], swarm.now)
    assert state.claim_imports("b", [3], [], swarm.now)[0] == []
    assert state.claim_imports("a", [], [3], swarm.now)[:2] == ([], [])
    assert state.claim_imports("b", [3], [], swarm.now)[:2] == ([3], [])


HOLD = SchedulerSettings(rack_claim_hold_factor=2.0)


def _imported(settings: SchedulerSettings, took_s: float) -> Swarm:
    """Rack-mates a and b; a claimed piece 3, imported it in ``took_s`` and released it."""
    swarm = Swarm(settings)
    _rack(swarm, "a", "b")
    swarm.state.claim_imports("a", [3], [], swarm.now)
    swarm.now += took_s
    assert swarm.state.claim_imports("a", [], [3], swarm.now)[:2] == ([], [])
    return swarm


def test_a_released_claim_is_kept_twice_as_long_as_the_import_took() -> None:
    swarm = _imported(HOLD, 0.4)  # rack-mates wait 0.8 s for a to serve it
    state = swarm.state
    swarm.now += 0.7
    assert state.claim_imports("b", [3], [], swarm.now)[:2] == ([], [3])
    # The claimant itself may claim it again at once (its request failed).
    assert state.claim_imports("a", [3], [], swarm.now)[0] == [3]
    swarm.now += 0.1
    state.claim_imports("a", [], [3], swarm.now)  # held 0.1 s this time
    swarm.now += 0.21
    assert state.claim_imports("b", [3], [], swarm.now)[:2] == ([3], [])


def test_a_released_claim_is_kept_at_most_hold_max_s() -> None:
    swarm = _imported(HOLD, 9.0)  # a slow import: twice that would be 18 s
    swarm.now += HOLD_MAX_S - 0.1
    assert swarm.state.claim_imports("b", [3], [], swarm.now)[0] == []
    swarm.now += 0.2
    assert swarm.state.claim_imports("b", [3], [], swarm.now)[:2] == ([3], [])


def test_by_default_a_released_piece_is_free_at_once() -> None:
    swarm = _imported(SchedulerSettings(), 0.4)  # rack_claim_hold_factor 0
    assert swarm.state.claim_imports("b", [3], [], swarm.now)[:2] == ([3], [])


def test_a_held_claim_of_a_peer_that_left_lapses_at_once() -> None:
    swarm = _imported(HOLD, 0.5)
    swarm.state.remove_peer("a")
    assert swarm.state.claim_imports("b", [3], [], swarm.now)[:2] == ([3], [])


def test_releasing_someone_elses_claim_does_nothing() -> None:
    swarm = Swarm()
    _rack(swarm, "a", "b")
    state = swarm.state
    state.claim_imports("a", [3], [], swarm.now)
    state.claim_imports("b", [], [3], swarm.now)
    assert state.claim_imports("b", [3], [], swarm.now)[:2] == ([], [3])


def test_a_claim_lapses_after_its_lease() -> None:
    swarm = Swarm(SchedulerSettings(rack_claim_lease_s=5.0))
    _rack(swarm, "a", "b")
    state = swarm.state
    state.claim_imports("a", [0], [], swarm.now)
    swarm.now += 4.9
    assert state.claim_imports("b", [0], [], swarm.now)[0] == []
    swarm.now += 0.2
    assert state.claim_imports("b", [0], [], swarm.now)[:2] == ([0], [])


def test_the_claims_of_a_peer_that_left_lapse_at_once() -> None:
    swarm = Swarm()
    _rack(swarm, "a", "b")
    state = swarm.state
    state.claim_imports("a", [0, 1], [], swarm.now)
    state.remove_peer("a")
    assert state.claim_imports("b", [0, 1], [], swarm.now)[:2] == ([0, 1], [])


def test_racks_and_tasks_claim_apart() -> None:
    swarm = Swarm()
    _rack(swarm, "a")
    swarm.peer("b", rack="r3")  # r2 holds everything: b would get it there
    swarm.peer("c", rack="r1", task="sha256:" + "c" * 64)
    state = swarm.state
    state.claim_imports("a", [0], [], swarm.now)
    assert state.claim_imports("b", [0], [], swarm.now)[:2] == ([0], [])
    assert state.claim_imports("c", [0], [], swarm.now)[:2] == ([0], [])


def test_no_rack_a_seed_or_claims_off_get_everything() -> None:
    swarm = Swarm()
    swarm.peer("norack")
    swarm.peer("norack2")
    swarm.peer("seed", rack="r1", seed=True)
    swarm.peer("seed2", rack="r1", seed=True)
    state = swarm.state
    for first, second in (("norack", "norack2"), ("seed", "seed2")):
        state.claim_imports(first, [0], [], swarm.now)
        assert state.claim_imports(second, [0, 0], [], swarm.now)[:2] == ([0], [])
    off = Swarm(SchedulerSettings(rack_claim_lease_s=0))
    _rack(off, "a", "b")
    off.state.claim_imports("a", [0], [], off.now)
    assert off.state.claim_imports("b", [0], [], off.now)[:2] == ([0], [])


def test_bad_claims_are_refused_with_the_field_named() -> None:
    swarm = Swarm()
    _rack(swarm, "a")
    with pytest.raises(InvalidEventError, match="claim"):
        swarm.state.claim_imports("a", [PIECES], [], swarm.now)
    with pytest.raises(InvalidEventError, match="release"):
        swarm.state.claim_imports("a", [], [-1], swarm.now)
    with pytest.raises(UnknownPeerError):
        swarm.state.claim_imports("nobody", [0], [], swarm.now)
