"""Back-to-source quota: seed peers first, then a few normal peers, everyone else waits."""

from __future__ import annotations

import pytest

from scheduler.core import (
    BackToSource,
    DecisionReason,
    Parents,
    PeerStateError,
    RetryLater,
    SchedulerSettings,
)
from tests.unit.scheduler.swarm import Swarm, check_invariants

R = DecisionReason


def _kinds(swarm: Swarm, peer_ids: list[str]) -> list[tuple[str, DecisionReason | None]]:
    out: list[tuple[str, DecisionReason | None]] = []
    for peer_id in peer_ids:
        decision = swarm.schedule(peer_id)
        reason = None if isinstance(decision, Parents) else decision.reason
        out.append((type(decision).__name__, reason))
    return out


def test_seed_first_then_normal_peers_wait_for_its_pieces() -> None:
    swarm = Swarm()
    swarm.peer("seed", seed=True)
    for name in ("a", "b"):
        swarm.peer(name)
    assert _kinds(swarm, ["seed", "a", "b"]) == [
        ("BackToSource", R.SEED_PEER),
        ("RetryLater", R.WAITING_FOR_SEED),
        ("RetryLater", R.WAITING_FOR_SEED),
    ]
    swarm.report("seed", None, [0])
    assert _kinds(swarm, ["a", "b"]) == [("Parents", None), ("Parents", None)]
    assert swarm.state.tasks["sha256:" + "ab" * 32].normal_back_to_source_count == 0


@pytest.mark.parametrize("quota", [0, 1, 3])
def test_without_a_seed_the_first_n_normal_peers_go_to_the_origin(quota: int) -> None:
    swarm = Swarm(SchedulerSettings(back_to_source_quota=quota))
    names = [f"p{i}" for i in range(5)]
    for name in names:
        swarm.peer(name)
    kinds = _kinds(swarm, names)
    assert kinds[:quota] == [("BackToSource", R.NO_SOURCE_IN_SWARM)] * quota
    assert kinds[quota:] == [("RetryLater", R.WAITING_FOR_SOURCE)] * (5 - quota)
    check_invariants(swarm.state)


def test_once_an_origin_peer_has_a_piece_the_others_get_it_as_parent() -> None:
    swarm = Swarm()
    swarm.peer("p0")
    swarm.peer("p1")
    assert isinstance(swarm.schedule("p0"), BackToSource)
    assert isinstance(swarm.schedule("p1"), RetryLater)
    swarm.report("p0", None, [0])
    decision = swarm.schedule("p1")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["p0"]


def test_quota_frees_when_an_origin_peer_fails() -> None:
    swarm = Swarm()
    swarm.peer("p0")
    swarm.peer("p1")
    assert isinstance(swarm.schedule("p0"), BackToSource)
    assert isinstance(swarm.schedule("p1"), RetryLater)
    swarm.state.remove_peer("p0")
    decision = swarm.schedule("p1")
    assert isinstance(decision, BackToSource)
    assert decision.reason is R.NO_SOURCE_IN_SWARM


def test_seed_peers_do_not_use_the_normal_quota() -> None:
    swarm = Swarm(SchedulerSettings(back_to_source_quota=1))
    swarm.peer("s1", seed=True)
    swarm.peer("s2", seed=True)
    assert _kinds(swarm, ["s1", "s2"]) == [("BackToSource", R.SEED_PEER)] * 2
    task = swarm.state.peers["s1"].task
    assert task.normal_back_to_source_count == 0
    assert not swarm.state.peers["s1"].holds_quota


def test_a_live_seed_host_holds_normal_peers_back_for_the_seed_wait() -> None:
    swarm = Swarm(SchedulerSettings(seed_wait_s=2.0))
    swarm.host("seed-host", seed=True)  # alive, but not (yet) working on this task
    swarm.peer("n")
    assert _kinds(swarm, ["n"]) == [("RetryLater", R.WAITING_FOR_SEED)]
    swarm.now = 2.0
    assert _kinds(swarm, ["n"]) == [("BackToSource", R.NO_SOURCE_IN_SWARM)]


def test_a_peer_told_to_wait_too_often_goes_to_the_origin_past_the_quota() -> None:
    swarm = Swarm(SchedulerSettings(back_to_source_quota=0, back_to_source_after_retries=3))
    swarm.peer("p")
    assert _kinds(swarm, ["p"] * 3) == [("RetryLater", R.WAITING_FOR_SOURCE)] * 3
    assert _kinds(swarm, ["p"]) == [("BackToSource", R.GAVE_UP_WAITING)]
    assert swarm.state.peers["p"].holds_quota
    check_invariants(swarm.state)


def test_retries_can_wait_forever_when_configured() -> None:
    swarm = Swarm(SchedulerSettings(back_to_source_quota=0, back_to_source_after_retries=None))
    swarm.peer("p")
    assert _kinds(swarm, ["p"] * 50) == [("RetryLater", R.WAITING_FOR_SOURCE)] * 50


def test_a_decision_with_parents_resets_the_retry_count() -> None:
    swarm = Swarm(SchedulerSettings(back_to_source_after_retries=2))
    swarm.peer("seed", seed=True)
    swarm.peer("p")
    swarm.schedule("seed")
    assert _kinds(swarm, ["p", "p"]) == [("RetryLater", R.WAITING_FOR_SEED)] * 2
    swarm.report("seed", None, [0])
    assert _kinds(swarm, ["p"]) == [("Parents", None)]
    assert swarm.state.peers["p"].retry_count == 0


def test_peers_holding_pieces_elsewhere_mean_wait_not_origin() -> None:
    swarm = Swarm()
    swarm.full("x", upload_slots=0)
    swarm.peer("p")
    assert _kinds(swarm, ["p"]) == [("RetryLater", R.NO_PARENT_YET)]


def test_the_only_holder_being_the_child_itself_does_not_count_as_a_source() -> None:
    swarm = Swarm()
    swarm.peer("p", pieces=[0])  # re-registered with what it had
    assert _kinds(swarm, ["p"]) == [("BackToSource", R.NO_SOURCE_IN_SWARM)]


def test_back_to_source_is_idempotent_and_drops_parents() -> None:
    swarm = Swarm()
    swarm.peer("p")
    assert _kinds(swarm, ["p", "p"]) == [
        ("BackToSource", R.NO_SOURCE_IN_SWARM),
        ("BackToSource", R.ALREADY_BACK_TO_SOURCE),
    ]
    assert swarm.state.tasks["sha256:" + "ab" * 32].normal_back_to_source_count == 1


def test_retry_delay_is_jittered_within_bounds() -> None:
    settings = SchedulerSettings(back_to_source_quota=0, retry_delay_s=1.0, retry_jitter=0.5)
    swarm = Swarm(settings)
    swarm.peer("p")
    delays = []
    for _ in range(20):
        decision = swarm.schedule("p")
        assert isinstance(decision, RetryLater)
        delays.append(decision.after_s)
    assert all(1.0 <= d <= 1.5 for d in delays)
    assert len(set(delays)) > 1


def test_empty_blob_goes_to_the_origin() -> None:
    swarm = Swarm()
    swarm.peer("p", piece_count=0)
    assert _kinds(swarm, ["p"]) == [("BackToSource", R.EMPTY_TASK)]


def test_a_finished_peer_asking_for_parents_is_an_error() -> None:
    swarm = Swarm()
    swarm.full("p")
    with pytest.raises(PeerStateError, match="already holds every piece"):
        swarm.schedule("p")


def test_a_child_that_blocked_every_holder_goes_to_the_origin_after_a_few_retries() -> None:
    from scheduler.core.decisions import BackToSource, DecisionReason, RetryLater

    swarm = Swarm()
    swarm.full("liar")  # holds every piece; no seed anywhere
    swarm.peer("victim")
    swarm.state.block_parent("victim", "liar")
    answers = [swarm.schedule("victim") for _ in range(4)]
    assert all(isinstance(a, RetryLater) for a in answers[:3])
    assert isinstance(answers[3], BackToSource)
    assert answers[3].reason is DecisionReason.SWARM_CANNOT_SERVE
