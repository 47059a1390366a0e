"""Rendezvous hashing of tasks over scheduler replicas, and a peer's view of the replicas."""

from __future__ import annotations

import collections
import random

import pytest

from peer.rendezvous import owner, rank
from peer.replica_view import ReplicaView

REPLICAS = [f"http://10.0.0.{i}:8002" for i in range(1, 5)]
TASKS = [f"sha256:{random.Random(i).getrandbits(256):064x}" for i in range(4000)]


def _owners(replicas: list[str]) -> dict[str, str]:
    return {task: rank(task, replicas)[0] for task in TASKS}


def test_the_ranking_depends_on_the_set_not_its_order() -> None:
    shuffled = REPLICAS[:]
    random.Random(7).shuffle(shuffled)
    for task in TASKS[:200]:
        assert rank(task, REPLICAS) == rank(task, shuffled) == rank(task, REPLICAS + REPLICAS)
        assert sorted(rank(task, REPLICAS)) == sorted(REPLICAS)


def test_the_ranking_is_the_same_in_every_process() -> None:
    # Pinned values: a peer and a scheduler in other processes, other Python builds or
    # after a restart must compute the same owner (no per-process hash seeding).
    assert rank("sha256:" + "ab" * 32, ["http://a:8002", "http://b:8002", "http://c:8002"]) == [
        "http://c:8002",
        "http://a:8002",
        "http://b:8002",
    ]


def test_tasks_spread_evenly() -> None:
    counts = collections.Counter(_owners(REPLICAS).values())
    share = len(TASKS) / len(REPLICAS)
    assert set(counts) == set(REPLICAS)
    for replica, count in counts.items():
        assert abs(count - share) < 0.1 * share, (replica, count, share)


def test_a_replica_leaving_moves_only_its_own_tasks_to_their_second_choice() -> None:
    before = _owners(REPLICAS)
    gone = REPLICAS[2]
    after = _owners([r for r in REPLICAS if r != gone])
    for task in TASKS:
        if before[task] == gone:
            assert after[task] == rank(task, REPLICAS)[1]
        else:
            assert after[task] == before[task]


def test_a_replica_joining_takes_about_its_share_and_nothing_else_moves() -> None:
    before = _owners(REPLICAS)
    newcomer = "http://10.0.0.9:8002"
    after = _owners([*REPLICAS, newcomer])
    moved = [task for task in TASKS if after[task] != before[task]]
    assert all(after[task] == newcomer for task in moved)
    share = len(TASKS) / (len(REPLICAS) + 1)
    assert abs(len(moved) - share) < 0.15 * share, (len(moved), share)


def test_no_replica_no_owner() -> None:
    assert owner("sha256:" + "00" * 32, []) is None
    assert rank("x", []) == []


# -- the peer's view -------------------------------------------------------------------

A, B, C = "http://a:8002", "http://b:8002", "http://c:8002"
TASK = TASKS[0]


def test_without_shared_membership_the_configured_urls_are_the_replicas() -> None:
    view = ReplicaView([A + "/", " " + B, A, ""])
    assert view.configured == (A, B)
    assert view.live(0.0) == (A, B)
    view.discovered(None, 0.0)
    assert not view.shared
    assert view.candidates(TASK, 0.0) == rank(TASK, [A, B])


def test_shared_membership_replaces_the_configured_urls() -> None:
    view = ReplicaView([A])
    view.discovered({B: 0.1, C: 0.3}, 0.0)
    assert view.shared
    assert view.live(0.0) == (B, C)
    assert view.candidates(TASK, 0.0) == rank(TASK, [B, C])


def test_a_replica_marked_down_goes_last_until_the_mark_expires() -> None:
    view = ReplicaView([A, B, C], down_s=10.0)
    first = view.candidates(TASK, 0.0)[0]
    view.mark_down(first, 1.0)
    assert view.is_down(first, 5.0)
    rest = [r for r in [A, B, C] if r != first]
    # The task goes to its second choice, the same one every peer picks.
    assert view.candidates(TASK, 5.0) == [*rank(TASK, rest), first]
    assert view.candidates(TASK, 5.0)[0] == rank(TASK, [A, B, C])[1]
    assert view.candidates(TASK, 11.0)[0] == first
    assert view.live(11.0) == (A, B, C)


def test_a_heartbeat_after_the_mark_lifts_it() -> None:
    view = ReplicaView([A], down_s=60.0, hold_s=2.0)
    view.discovered({A: 0.0, B: 0.0}, 0.0)
    view.mark_down(B, 10.0)
    # Heard from since, but marked too recently: a replica that heartbeats yet refuses
    # this peer is not retried at once.
    view.discovered({A: 0.0, B: 0.1}, 11.0)
    assert view.is_down(B, 11.0)
    # Heard from 2 s before the mark: still down (the heartbeat that is about to expire).
    view.discovered({A: 0.0, B: 2.0}, 12.0)
    assert view.is_down(B, 12.0)
    # Heard from after the mark: it is alive (a blip, or it restarted).
    view.discovered({A: 0.0, B: 0.5}, 12.0)
    assert not view.is_down(B, 12.0)
    assert view.live(12.0) == (A, B)


def test_every_replica_down_still_leaves_candidates_to_try() -> None:
    view = ReplicaView([A, B])
    view.mark_down(A, 0.0)
    view.mark_down(B, 0.0)
    assert view.live(1.0) == ()
    assert sorted(view.candidates(TASK, 1.0)) == [A, B]


@pytest.mark.parametrize("replicas", [{}, None])
def test_an_empty_membership_answer_falls_back_to_the_configured_urls(
    replicas: dict[str, float] | None,
) -> None:
    view = ReplicaView([A])
    view.discovered({B: 0.0}, 0.0)
    view.discovered(replicas, 1.0)
    assert view.known() == (A,)
