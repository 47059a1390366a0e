"""A failed or slow parent is blocked for its child; reports are validated as a batch."""

from __future__ import annotations

import pytest

from scheduler.core import (
    FilterReason,
    InvalidEventError,
    ParentReported,
    Parents,
    PieceReport,
    PiecesReported,
    RetryLater,
    SchedulerSettings,
    UnknownPeerError,
)
from tests.unit.scheduler.swarm import PIECES, Swarm, check_invariants


def _child_with_two_parents() -> Swarm:
    swarm = Swarm()
    swarm.full("x")
    swarm.full("y")
    swarm.peer("c")
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert {p.peer_id for p in decision.parents} == {"x", "y"}
    return swarm


def test_a_failed_piece_blocks_the_parent_and_frees_its_slot() -> None:
    swarm = _child_with_two_parents()
    assert swarm.state.hosts["h-x"].children_count == 1
    swarm.report("c", "x", [0], ok=False)
    child = swarm.state.peers["c"]
    assert "x" in child.blocked_parent_ids
    assert list(child.parents) == ["y"]
    assert swarm.state.hosts["h-x"].children_count == 0
    assert swarm.state.hosts["h-x"].upload_failed_count == 1
    assert child.pieces_mask == 0  # a failed piece is not a piece
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["y"]
    assert [(r.peer_id, r.reason) for r in decision.rejected] == [("x", FilterReason.BLOCKED)]
    check_invariants(swarm.state)


def test_blocking_is_per_child() -> None:
    swarm = _child_with_two_parents()
    swarm.report("c", "x", [0], ok=False)
    swarm.peer("d")
    decision = swarm.schedule("d")
    assert isinstance(decision, Parents)
    assert {p.peer_id for p in decision.parents} == {"x", "y"}


def test_a_child_can_report_a_slow_parent_without_a_piece() -> None:
    swarm = _child_with_two_parents()
    swarm.state.apply(ParentReported("c", "y"), swarm.now)
    assert list(swarm.state.peers["c"].parents) == ["x"]
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["x"]


def test_good_pieces_add_to_the_child_and_the_parent_host_load() -> None:
    swarm = _child_with_two_parents()
    swarm.report("c", "x", [0, 1], cost_s=0.5)
    swarm.report("c", None, [2])  # from the origin
    child = swarm.state.peers["c"]
    assert child.finished_piece_count == 3
    assert child.task.availability[:4] == [3, 3, 3, 2]
    assert swarm.state.hosts["h-x"].upload_ok_count == 2
    assert swarm.state.hosts["h-x"].recent_upload_bytes(swarm.now) > 0
    assert len(swarm.state.peers["x"].costs) == 2
    assert "c" in child.task.holders


def test_a_report_naming_a_parent_that_left_still_counts_the_piece() -> None:
    swarm = _child_with_two_parents()
    swarm.state.remove_peer("x")
    swarm.report("c", "x", [0])
    swarm.report("c", "x", [1], ok=False)
    assert swarm.state.peers["c"].finished_piece_count == 1


@pytest.mark.parametrize(
    ("report", "field"),
    [
        (PieceReport(PIECES, "x", 1, 1.0), "reports[1].piece_index"),
        (PieceReport(0, "c", 1, 1.0), "reports[1].parent_id"),
        (PieceReport(0, "elsewhere", 1, 1.0), "reports[1].parent_id"),
    ],
)
def test_a_bad_report_rejects_the_whole_batch(report: PieceReport, field: str) -> None:
    swarm = _child_with_two_parents()
    swarm.peer("elsewhere", task="sha256:" + "cd" * 32)
    batch = PiecesReported("c", (PieceReport(0, "x", 1, 1.0), report))
    with pytest.raises(InvalidEventError, match=field.replace("[", r"\[").replace("]", r"\]")):
        swarm.state.report_pieces(batch, swarm.now)
    assert swarm.state.peers["c"].pieces_mask == 0  # the good first report was not applied


def test_reports_from_an_unknown_peer_are_an_error() -> None:
    swarm = Swarm()
    with pytest.raises(UnknownPeerError, match="unknown peer 'ghost'"):
        swarm.report("ghost", None, [0])


def test_a_child_asking_again_keeps_good_parents_the_new_sample_missed() -> None:
    swarm = Swarm(SchedulerSettings(candidate_sample_size=1, parents_per_decision=2))
    swarm.peer("c")
    for i in range(30):
        swarm.peer(f"x{i}", pieces=[i % PIECES])
    first = swarm.schedule("c")
    assert isinstance(first, Parents)
    kept = first.parents[0].peer_id
    for _ in range(10):
        again = swarm.schedule("c")
        assert isinstance(again, Parents)
        assert kept in [p.peer_id for p in again.parents]
    check_invariants(swarm.state)


def test_a_parent_still_downloading_is_kept_while_it_moves() -> None:
    # c caught up with x; x is still receiving pieces, so c stays right behind it.
    swarm = Swarm()
    swarm.peer("x", pieces=[0])
    swarm.peer("c")
    assert isinstance(swarm.schedule("c"), Parents)
    swarm.report("c", "x", [0])
    swarm.now = 4.0
    swarm.report("x", None, [1])
    swarm.report("c", "x", [1])
    swarm.now = 8.0  # x moved 4 s ago, under keep_moving_parent_s (5 s)
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["x"]
    check_invariants(swarm.state)


def test_retry_later_releases_parents_that_stopped_moving() -> None:
    swarm = Swarm()
    swarm.peer("x", pieces=[0])
    swarm.peer("c")
    assert isinstance(swarm.schedule("c"), Parents)
    swarm.report("c", "x", [0])
    swarm.now = 5.0  # x received nothing since it registered at 0
    decision = swarm.schedule("c")
    assert isinstance(decision, RetryLater)
    assert swarm.state.peers["c"].parents == {}
    assert swarm.state.hosts["h-x"].children_count == 0


def test_a_parent_with_pieces_to_give_ranks_before_one_only_kept() -> None:
    swarm = Swarm(SchedulerSettings(parents_per_decision=1))
    swarm.peer("x", pieces=[0])
    swarm.peer("c")
    assert [p.peer_id for p in swarm.schedule("c").parents] == ["x"]  # type: ignore[union-attr]
    swarm.report("c", "x", [0])
    swarm.peer("y", pieces=[0, 1])
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["y"]
    check_invariants(swarm.state)


def test_the_last_piece_releases_the_parents_before_the_digest_check() -> None:
    swarm = _child_with_two_parents()
    swarm.report("c", "x", range(PIECES))
    assert swarm.state.peers["c"].parents == {}
    assert swarm.state.hosts["h-y"].children_count == 0
    assert "c" in swarm.state.tasks[swarm.state.peers["c"].task.task_id].complete_peers
