"""Trusted piece digests (set from origin or seed bytes, conflicts refused, dropped on failure)
and the bounds on reported bytes that came with them."""

from __future__ import annotations

import pytest

from scheduler.core import (
    ConflictError,
    DigestConflictError,
    InvalidEventError,
    PeerFailed,
    PeerLeft,
    PieceReport,
    PiecesReported,
)
from tests.unit.scheduler.swarm import PIECE_BYTES, TASK, Swarm, check_invariants

GOOD = "sha256:" + "11" * 32
OTHER = "sha256:" + "22" * 32


def _report(
    swarm: Swarm,
    peer_id: str,
    parent_id: str | None,
    digests: dict[int, str | None],
    *,
    ok: bool = True,
) -> None:
    reports = tuple(
        PieceReport(index, parent_id, PIECE_BYTES, 0.1, ok, digest)
        for index, digest in digests.items()
    )
    swarm.state.report_pieces(PiecesReported(peer_id, reports), swarm.now)


def _digests(swarm: Swarm) -> dict[int, str]:
    return swarm.state.task_piece_digests(TASK)


def test_an_origin_report_sets_the_trusted_digest() -> None:
    swarm = Swarm()
    swarm.peer("a")
    _report(swarm, "a", None, {0: GOOD, 1: OTHER, 2: None})
    assert _digests(swarm) == {0: GOOD, 1: OTHER}
    check_invariants(swarm.state)


def test_a_report_from_a_seed_parent_sets_the_digest_but_a_normal_parent_does_not() -> None:
    swarm = Swarm()
    swarm.peer("seed", pieces=[0], seed=True)  # registered with pieces: no digest known
    swarm.peer("normal", pieces=[1])
    swarm.peer("c")
    _report(swarm, "c", "normal", {1: GOOD})
    assert _digests(swarm) == {}
    _report(swarm, "c", "seed", {0: GOOD})
    assert _digests(swarm) == {0: GOOD}


def test_a_different_digest_later_is_a_conflict_naming_the_piece_and_changes_nothing() -> None:
    swarm = Swarm()
    swarm.peer("a")
    swarm.peer("b")
    swarm.peer("c")
    _report(swarm, "a", None, {3: GOOD})
    # The first report of piece 1 is fine; the batch is refused whole because of piece 3.
    with pytest.raises(DigestConflictError, match="piece 3") as caught:
        _report(swarm, "b", "a", {1: None, 3: OTHER})
    assert isinstance(caught.value, ConflictError)
    assert caught.value.field == "reports[1].digest"
    assert (caught.value.piece_index, caught.value.trusted) == (3, GOOD)
    assert swarm.state.peers["b"].pieces_mask == 0
    # Another origin fetch that hashes differently is refused too: the first one stands.
    with pytest.raises(DigestConflictError):
        _report(swarm, "c", None, {3: OTHER})
    _report(swarm, "c", None, {3: GOOD})
    assert _digests(swarm) == {3: GOOD}
    check_invariants(swarm.state)


def test_a_batch_cannot_contradict_itself() -> None:
    swarm = Swarm()
    swarm.peer("a")
    reports = (
        PieceReport(0, None, PIECE_BYTES, 0.1, True, GOOD),
        PieceReport(0, None, PIECE_BYTES, 0.1, True, OTHER),
    )
    with pytest.raises(DigestConflictError) as caught:
        swarm.state.report_pieces(PiecesReported("a", reports), swarm.now)
    assert caught.value.field == "reports[1].digest"
    assert _digests(swarm) == {}


def test_a_failed_piece_says_nothing_about_the_digest() -> None:
    swarm = Swarm()
    swarm.peer("a")
    swarm.peer("b")
    _report(swarm, "a", None, {0: GOOD})
    _report(swarm, "b", "a", {0: OTHER}, ok=False)
    _report(swarm, "b", None, {1: OTHER}, ok=False)
    assert _digests(swarm) == {0: GOOD}


def test_a_failed_peer_takes_its_digests_with_it_but_a_peer_that_left_does_not() -> None:
    swarm = Swarm()
    swarm.peer("a")
    swarm.peer("b")
    swarm.peer("keep")
    _report(swarm, "a", None, {0: GOOD, 1: GOOD})
    _report(swarm, "b", None, {2: GOOD})
    swarm.state.apply(PeerLeft("b"), swarm.now)
    assert _digests(swarm) == {0: GOOD, 1: GOOD, 2: GOOD}
    swarm.state.apply(PeerFailed("a", reason="digest_mismatch"), swarm.now)
    assert _digests(swarm) == {2: GOOD}
    # The origin bytes were bad; a new origin fetch defines the pieces again.
    swarm.peer("c")
    _report(swarm, "c", None, {0: OTHER})
    assert _digests(swarm) == {0: OTHER, 2: GOOD}
    check_invariants(swarm.state)


def test_failing_the_first_contributor_keeps_a_digest_set_again_by_another() -> None:
    swarm = Swarm()
    swarm.peer("a")
    swarm.peer("b")
    swarm.peer("keep")
    _report(swarm, "a", None, {0: GOOD})
    swarm.state.fail_peer("a")
    _report(swarm, "b", None, {0: OTHER})
    swarm.peer("a")
    swarm.state.fail_peer("a")
    assert _digests(swarm) == {0: OTHER}


def test_digests_go_with_the_task() -> None:
    swarm = Swarm()
    swarm.peer("a")
    _report(swarm, "a", None, {0: GOOD})
    swarm.state.remove_peer("a")
    assert TASK not in swarm.state.tasks
    assert _digests(swarm) == {}


def test_the_digests_returned_are_a_copy() -> None:
    swarm = Swarm()
    swarm.peer("a")
    _report(swarm, "a", None, {0: GOOD})
    _digests(swarm)[0] = OTHER
    assert _digests(swarm) == {0: GOOD}


def test_empty_digest_and_reason_are_invalid() -> None:
    with pytest.raises(InvalidEventError, match="digest"):
        PieceReport(0, None, 1, 0.1, True, "")
    with pytest.raises(InvalidEventError, match="reason"):
        PeerFailed("a", reason="")


def test_a_report_of_more_bytes_than_a_piece_is_refused() -> None:
    swarm = Swarm()
    swarm.peer("a")
    with pytest.raises(InvalidEventError) as caught:
        swarm.state.report_pieces(
            PiecesReported("a", (PieceReport(0, None, PIECE_BYTES + 1, 0.1, True, GOOD),)),
            swarm.now,
        )
    assert caught.value.field == "reports[0].size_bytes"
    assert _digests(swarm) == {}


def _register_whole(swarm: Swarm, peer_id: str, digests: tuple[str, ...]) -> None:
    from scheduler.core import PeerRegistered
    from tests.unit.scheduler.swarm import PIECES

    swarm.host(f"h-{peer_id}")
    swarm.state.register_peer(
        PeerRegistered(
            peer_id,
            TASK,
            f"h-{peer_id}",
            PIECES * PIECE_BYTES,
            PIECE_BYTES,
            frozenset(range(PIECES)),
            digests,
        ),
        swarm.now,
    )


def test_a_peer_holding_the_verified_blob_vouches_for_its_pieces_after_a_restart() -> None:
    from tests.unit.scheduler.swarm import PIECES

    swarm = Swarm()  # a fresh scheduler: no origin report to trust
    digests = tuple(f"sha256:{i:064x}" for i in range(PIECES))
    _register_whole(swarm, "holder", digests)
    assert swarm.state.task_piece_digests(TASK) == dict(enumerate(digests))
    check_invariants(swarm.state)


def test_whole_blob_digests_that_conflict_refuse_the_registration() -> None:
    from tests.unit.scheduler.swarm import PIECES

    swarm = Swarm()
    digests = tuple(f"sha256:{i:064x}" for i in range(PIECES))
    _register_whole(swarm, "first", digests)
    with pytest.raises(DigestConflictError):
        _register_whole(swarm, "liar", (OTHER,) + digests[1:])
    assert "liar" not in swarm.state.peers
    check_invariants(swarm.state)


def test_only_a_peer_with_every_piece_may_vouch() -> None:
    from scheduler.core import PeerRegistered

    with pytest.raises(InvalidEventError) as caught:
        PeerRegistered("p", TASK, "h", 4 * PIECE_BYTES, PIECE_BYTES, frozenset({0}), (GOOD,))
    assert caught.value.field == "piece_digests"
