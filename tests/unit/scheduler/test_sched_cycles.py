"""The parent graph never gets a cycle: a child's descendant is never offered as its parent."""

from __future__ import annotations

import random

import pytest

from scheduler.core import FilterReason, Parents, Peer, RetryLater, SchedulerState, filters
from scheduler.core.filters import Descendants
from tests.unit.scheduler.swarm import PIECES, Swarm, check_invariants


def _chain(swarm: Swarm, names: list[str]) -> None:
    """names[0] holds piece 0 and names[i] holds piece i; each is the parent of the next.

    Blocking everything but the previous link forces the chain shape.
    """
    for i, name in enumerate(names):
        swarm.peer(name, pieces=[i])
    for i, name in enumerate(names[1:], start=1):
        for other in names:
            if other not in (name, names[i - 1]):
                swarm.state.block_parent(name, other)
        decision = swarm.schedule(name)
        assert isinstance(decision, Parents)
        assert [p.peer_id for p in decision.parents] == [names[i - 1]]


def test_a_grandchild_is_not_offered_to_its_grandparent() -> None:
    swarm = Swarm()
    _chain(swarm, ["a", "b", "c"])
    # a lacks pieces 1 and 2, which only its descendants b and c hold.
    decision = swarm.schedule("a")
    assert isinstance(decision, RetryLater)
    reasons = {r.peer_id: r.reason for r in decision.rejected}
    assert reasons == {"a": FilterReason.SELF, "b": FilterReason.CYCLE, "c": FilterReason.CYCLE}
    check_invariants(swarm.state)


def test_a_peer_in_another_branch_is_not_a_cycle() -> None:
    swarm = Swarm()
    _chain(swarm, ["a", "b"])
    swarm.peer("side", pieces=[PIECES - 1])  # not downloading from a
    decision = swarm.schedule("a")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["side"]


def test_a_finished_descendant_is_a_fine_parent() -> None:
    # A finished peer drops its parents, so it no longer descends from anybody.
    swarm = Swarm()
    _chain(swarm, ["a", "b"])
    swarm.state.finish_peer("b")
    decision = swarm.schedule("a")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["b"]


@pytest.mark.parametrize("seed", range(20))
def test_random_swarms_stay_acyclic(seed: int) -> None:
    """Random registrations, transfers, failures and decisions keep every invariant."""
    rng = random.Random(seed)
    swarm = Swarm(seed=seed)
    names = [f"p{i}" for i in range(25)]
    for name in names:
        held = rng.sample(range(PIECES), rng.randrange(0, 3))
        swarm.peer(name, pieces=held, upload_slots=rng.randrange(0, 6))
    for _ in range(400):
        name = rng.choice(names)
        peer = swarm.state.peers.get(name)
        action = rng.random()
        if peer is None:
            swarm.peer(name, "h-" + name)
        elif peer.is_complete:
            swarm.state.finish_peer(name)
        elif action < 0.7:
            decision = swarm.schedule(name)
            for choice in decision.parents if isinstance(decision, Parents) else ():
                wanted = swarm.state.peers[choice.peer_id].pieces_mask & ~peer.pieces_mask
                if wanted:
                    index = (wanted & -wanted).bit_length() - 1
                    swarm.report(name, choice.peer_id, [index], ok=rng.random() < 0.9)
        elif action < 0.85:
            swarm.state.remove_peer(name)
        else:
            swarm.state.finish_peer(name)
        check_invariants(swarm.state)


def _reachable_below(root: Peer) -> set[str]:
    seen: set[str] = set()
    stack = [root]
    while stack:
        for peer_id, below in stack.pop().children.items():
            if peer_id not in seen:
                seen.add(peer_id)
                stack.append(below)
    return seen


@pytest.mark.parametrize("walk_down_first", [0, filters.WALK_DOWN_FIRST])
@pytest.mark.parametrize("seed", range(30))
def test_descendants_answers_like_a_full_walk_down(
    seed: int, walk_down_first: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two-way walk gives the answer of walking the whole subtree, asked in any order
    and any number of times, on random parent graphs (acyclic, as the filter keeps them)."""
    monkeypatch.setattr(filters, "WALK_DOWN_FIRST", walk_down_first)
    rng = random.Random(seed)
    swarm = Swarm(seed=seed)
    names = [f"p{i}" for i in range(rng.randrange(2, 90))]
    peers = [swarm.peer(name) for name in names]
    # Edges only from earlier to later peers in a shuffled order: no cycle.
    order = peers[:]
    rng.shuffle(order)
    density = rng.random()
    for low, child in enumerate(order):
        for parent in order[:low]:
            if rng.random() < density * 4 / max(1, low):
                SchedulerState._link(child, parent)
    for child in rng.sample(peers, min(len(peers), 8)):
        below = _reachable_below(child)
        descendants = Descendants(child)
        for candidate in rng.choices(peers, k=25):
            if candidate is not child:
                assert (candidate in descendants) == (candidate.peer_id in below)
