"""When the conductor asks its parents' piece lists again (peer.parent_watch)."""

from __future__ import annotations

from peer.parent_watch import wants_fresher_lists


def test_a_pipeline_that_is_not_full_wants_fresher_lists() -> None:
    # Plenty offered, but only 4 requests could go out (say, one parent at its limit).
    available = {"a": frozenset(range(20))}
    assert wants_fresher_lists(4, 8, list(range(4, 20)), available, [])


def test_a_full_pipeline_with_enough_offered_pieces_does_not() -> None:
    available = {"a": frozenset(range(10)), "b": frozenset(range(10, 20))}
    picks = [(0, "a"), (10, "b")]
    assert not wants_fresher_lists(8, 8, list(range(20)), available, picks)


def test_pieces_just_picked_and_pieces_nobody_offers_do_not_count() -> None:
    available = {"a": frozenset(range(9))}
    # 9 offered, one of them just picked: 8 left, enough for 8 slots.
    assert not wants_fresher_lists(8, 8, list(range(20)), available, [(0, "a")])
    # Two picked: 7 left, short of 8.
    assert wants_fresher_lists(8, 8, list(range(20)), available, [(0, "a"), (1, "a")])
    # Missing pieces no parent offers change nothing.
    assert wants_fresher_lists(8, 8, list(range(100)), {"a": frozenset(range(3))}, [])
