"""Origin shares (scheduler.core.origin_shares): the seed and the first peer of each rack
split a blob's origin fetch, each piece handed to one of them, then get parents."""

from __future__ import annotations

from scheduler.core import BackToSource, DecisionReason, Parents, RetryLater, SchedulerSettings
from tests.unit.scheduler.swarm import PIECES, Swarm, check_invariants

R = DecisionReason
ON = SchedulerSettings(origin_sharers_per_rack=1)


def _sent(swarm: Swarm, peer_id: str) -> tuple[DecisionReason, bool]:
    decision = swarm.schedule(peer_id)
    assert isinstance(decision, BackToSource), decision
    return decision.reason, decision.shared


def _racks(settings: SchedulerSettings = ON) -> Swarm:
    """A seed, two peers in rack r1 and one in r2, in that order."""
    swarm = Swarm(settings)
    swarm.peer("seed", seed=True, rack="rs")
    for peer_id, rack in (("a", "r1"), ("b", "r1"), ("c", "r2")):
        swarm.peer(peer_id, rack=rack)
    return swarm


def test_the_seed_and_the_first_peer_of_each_rack_split_the_origin_fetch() -> None:
    swarm = _racks()
    state = swarm.state
    assert _sent(swarm, "seed") == (R.SEED_PEER, True)
    assert _sent(swarm, "a") == (R.ORIGIN_SHARE, True)
    decision = swarm.schedule("b")  # second in r1: waits for the others' pieces
    assert isinstance(decision, RetryLater) and decision.reason is R.WAITING_FOR_SEED
    assert _sent(swarm, "c") == (R.ORIGIN_SHARE, True)
    assert state.take_origin_pieces("seed", 2, swarm.now) == [0, 1]
    assert state.take_origin_pieces("a", 2, swarm.now) == [2, 3]
    assert state.take_origin_pieces("c", 3, swarm.now) == [4, 5, 6]
    assert state.take_origin_pieces("b", 2, swarm.now) == []  # not sent to take any
    assert state.take_origin_pieces("seed", 4, swarm.now) == [7]
    # Every piece is taken: the takers are done, each after its last pieces arrive.
    swarm.report("seed", None, [0, 1, 7])
    swarm.report("a", None, [2, 3])
    swarm.report("c", None, [4, 5, 6])
    for taker in ("seed", "a", "c"):
        assert state.take_origin_pieces(taker, 4, swarm.now) == []
        assert state.peers[taker].took_origin_share
        assert not state.peers[taker].back_to_source
    # Then they get parents like any peer, the seed too: from the others' shares.
    seed = swarm.schedule("seed")
    assert isinstance(seed, Parents)
    assert {choice.peer_id for choice in seed.parents} == {"a", "c"}
    assert isinstance(swarm.schedule("a"), Parents)
    assert state.tasks[state.peers["a"].task.task_id].normal_back_to_source_count == 2
    check_invariants(state)


def test_a_taker_does_not_get_its_own_unreported_pieces_again() -> None:
    swarm = _racks()
    swarm.schedule("seed")
    assert swarm.state.take_origin_pieces("seed", 2, swarm.now) == [0, 1]
    # Not reported yet: still its, and not handed to it twice.
    assert swarm.state.take_origin_pieces("seed", 2, swarm.now) == [2, 3]
    # A piece some peer holds is skipped whoever took it.
    swarm.report("a", None, [4])
    assert swarm.state.take_origin_pieces("seed", 2, swarm.now) == [5, 6]


def test_pieces_of_a_taker_that_leaves_are_taken_again() -> None:
    swarm = _racks()
    swarm.schedule("seed")
    swarm.schedule("a")
    state = swarm.state
    assert state.take_origin_pieces("a", 2, swarm.now) == [0, 1]
    assert state.take_origin_pieces("seed", 2, swarm.now) == [2, 3]
    state.remove_peer("a")
    assert state.take_origin_pieces("seed", 4, swarm.now) == [0, 1, 4, 5]
    check_invariants(state)


def test_pieces_of_a_stalled_taker_are_taken_again_after_the_lease() -> None:
    swarm = _racks(SchedulerSettings(origin_sharers_per_rack=1, origin_share_lease_s=5.0))
    swarm.schedule("seed")
    swarm.schedule("a")
    state = swarm.state
    assert state.take_origin_pieces("a", 2, swarm.now) == [0, 1]
    swarm.now += 4.9
    assert state.take_origin_pieces("seed", 2, swarm.now) == [2, 3]
    swarm.now += 0.2
    assert state.take_origin_pieces("seed", 2, swarm.now) == [0, 1]


def _unlabelled(settings: SchedulerSettings = ON) -> Swarm:
    """Peers without rack labels, so no sharers: "x" goes to the origin as the quota's
    peer, for a share; "y" waits for it."""
    swarm = Swarm(settings)
    swarm.peer("x")
    swarm.peer("y")
    assert _sent(swarm, "x") == (R.NO_SOURCE_IN_SWARM, True)
    decision = swarm.schedule("y")
    assert isinstance(decision, RetryLater) and decision.reason is R.WAITING_FOR_SOURCE
    return swarm


def _quota_taker(settings: SchedulerSettings = ON) -> Swarm:
    """``_unlabelled``, and "x" takes every piece, reports two and stops."""
    swarm = _unlabelled(settings)
    assert swarm.state.take_origin_pieces("x", PIECES, swarm.now) == list(range(PIECES))
    swarm.report("x", None, [0, 1])
    return swarm


def test_a_peer_the_swarm_cannot_serve_takes_the_pieces_of_a_taker_that_left() -> None:
    swarm = _quota_taker()
    swarm.state.remove_peer("x")
    assert _sent(swarm, "y") == (R.ORIGIN_SHARE, True)
    assert swarm.state.take_origin_pieces("y", PIECES, swarm.now) == list(range(PIECES))
    check_invariants(swarm.state)


def test_a_peer_the_swarm_cannot_serve_takes_the_pieces_of_a_stalled_taker() -> None:
    swarm = _quota_taker(SchedulerSettings(origin_sharers_per_rack=1, origin_share_lease_s=5.0))
    swarm.now += 4.9
    swarm.state.block_parent("y", "x")  # x holds 0 and 1, but y cannot reach it
    swarm.state.peers["y"].retry_count = 0
    decision = swarm.schedule("y")
    assert isinstance(decision, RetryLater), decision  # x may still fetch them
    swarm.now += 0.2
    assert _sent(swarm, "y") == (R.ORIGIN_SHARE, True)
    assert swarm.state.take_origin_pieces("y", PIECES, swarm.now) == list(range(2, PIECES))


def test_without_sharers_seeds_and_the_quota_fetch_whole_blobs() -> None:
    assert SchedulerSettings().origin_sharers_per_rack == 0  # the default
    swarm = _racks(SchedulerSettings())
    assert _sent(swarm, "seed") == (R.SEED_PEER, False)
    assert swarm.state.take_origin_pieces("seed", 4, swarm.now) == []
    assert swarm.state.peers["seed"].back_to_source  # a whole-blob fetch goes on
    decision = swarm.schedule("a")
    assert isinstance(decision, RetryLater) and decision.reason is R.WAITING_FOR_SEED
    flat = Swarm()
    flat.peer("x", rack="r1")
    assert _sent(flat, "x") == (R.NO_SOURCE_IN_SWARM, False)


def test_peers_without_a_rack_label_never_share_but_the_quota_peer_takes_pieces() -> None:
    swarm = _unlabelled()
    assert swarm.state.take_origin_pieces("x", 3, swarm.now) == [0, 1, 2]
    # Asking again while taking: the same share goes on.
    assert _sent(swarm, "x") == (R.ALREADY_BACK_TO_SOURCE, True)
