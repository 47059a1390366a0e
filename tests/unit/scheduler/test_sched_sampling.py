"""Candidate sampling: holders only, nearest tier first, complete peers as a top-up."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from scheduler.core import Parents, SchedulerSettings
from scheduler.core.random_set import RandomSet
from scheduler.core.sampling import sample_candidates
from tests.unit.scheduler.swarm import PIECES, Swarm


def _topology() -> Swarm:
    swarm = Swarm()
    swarm.peer("c", idc="dc1", rack="r1")
    for i in range(5):
        swarm.peer(f"rack{i}", pieces=[0], idc="dc1", rack="r1")
        swarm.peer(f"idc{i}", pieces=[0], idc="dc1", rack="r2")
        swarm.peer(f"far{i}", pieces=[0], idc="dc2", rack="r1")  # same rack name, other idc
        swarm.peer(f"empty{i}", idc="dc1", rack="r1")
    return swarm


@pytest.mark.parametrize(
    ("size", "expected_groups"),
    [
        (3, {"rack": 3}),
        (5, {"rack": 5}),
        (8, {"rack": 5, "idc": 3}),
        (12, {"rack": 5, "idc": 5, "far": 2}),
        (40, {"rack": 5, "idc": 5, "far": 5}),
    ],
)
def test_sample_fills_rack_then_idc_then_anywhere_with_holders_only(
    size: int, expected_groups: dict[str, int]
) -> None:
    swarm = _topology()
    child = swarm.state.peers["c"]
    picked = sample_candidates(child, size, random.Random(1))
    groups = Counter(peer.peer_id.rstrip("0123456789") for peer in picked)
    assert groups == expected_groups
    assert len({peer.peer_id for peer in picked}) == len(picked)


def test_unlabelled_hosts_sample_from_the_whole_task() -> None:
    swarm = _topology()
    swarm.peer("plain")
    picked = sample_candidates(swarm.state.peers["plain"], 15, random.Random(1))
    assert len(picked) == 15


def test_complete_peers_top_up_when_the_sample_has_nothing_useful() -> None:
    # 30 peers hold just piece 0, like the child; one seed, out of rack, holds everything.
    swarm = Swarm(SchedulerSettings(candidate_sample_size=5))
    swarm.peer("c", pieces=[0], idc="dc1", rack="r1")
    for i in range(30):
        swarm.peer(f"same{i}", pieces=[0], idc="dc1", rack="r1")
    swarm.full("seed", seed=True, idc="dc9")
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["seed"]
    assert len(decision.rejected) == 5


def test_random_set_removal_keeps_sampling_uniform_and_exact() -> None:
    items: RandomSet[int] = RandomSet()
    for i in range(10):
        items.add(str(i), i)
    items.add("3", 99)  # already present: ignored
    for key in ("0", "9", "4", "missing"):
        items.discard(key)
    assert sorted(items) == [1, 2, 3, 5, 6, 7, 8]
    assert "4" not in items and "5" in items
    rng = random.Random(0)
    counts = Counter(x for _ in range(7000) for x in items.sample(rng, 2))
    assert set(counts) == {1, 2, 3, 5, 6, 7, 8}
    assert all(1700 < c < 2300 for c in counts.values())  # 2000 each if uniform
    assert sorted(items.sample(rng, 50)) == [1, 2, 3, 5, 6, 7, 8]


def test_a_peer_holding_everything_is_indexed_as_complete_until_it_leaves() -> None:
    swarm = Swarm()
    swarm.peer("p", pieces=range(PIECES - 1))
    task = swarm.state.peers["p"].task
    assert "p" not in task.complete_peers
    swarm.report("p", None, [PIECES - 1])
    assert "p" in task.complete_peers
    swarm.peer("q")
    swarm.state.remove_peer("p")
    assert len(task.complete_peers) == 0
