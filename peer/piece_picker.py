"""Which pieces to ask which parents for next (sans-IO; the simulator runs it too).

Two needs pull apart. A client streaming the blob wants pieces in index order, while
the swarm wants each peer to hold *different* pieces early, so peers can trade. The
picker always asks first for the lowest missing piece some parent holds (what the
client needs next), and fills the other slots from a short window at the front of what
is missing (nothing far ahead), rarest among the parents first, ties broken at random.
Random ties matter: when every child sees only the seed, ordering by index would make
them all fetch the same pieces and leave them nothing to trade (measured with
``bench/swarm_bench.py``). Each piece goes to the least busy parent holding it, ties
broken at random so that many children do not all queue at the same parent.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence, Set


def pick_pieces(
    missing: Sequence[int],
    availability: Mapping[str, Set[int]],
    parent_load: Mapping[str, int],
    slots: int,
    max_per_parent: int,
    window: int,
    rng: random.Random,
    seeds: Set[str] = frozenset(),
) -> list[tuple[int, str]]:
    """Up to ``slots`` (piece, parent) requests to start now.

    ``missing`` are the pieces neither present nor in flight, ascending; ``availability``
    maps each parent to the pieces it holds; ``parent_load`` counts requests already in
    flight per parent, and no parent gets more than ``max_per_parent``.
    """
    if slots <= 0 or not missing:
        return []
    load = {parent: parent_load.get(parent, 0) for parent in availability}
    candidates: list[tuple[int, float, int, list[str]]] = []  # rarity, tie, index, holders
    for index in missing:
        holders = [p for p, pieces in availability.items() if index in pieces]
        if holders:
            # The lowest piece sorts first whatever its rarity: the client waits on it.
            tie = -1.0 if not candidates else rng.random()
            candidates.append((len(holders) if candidates else 0, tie, index, holders))
            if len(candidates) >= window:
                break
    candidates.sort(key=lambda c: (c[0], c[1]))
    picks: list[tuple[int, str]] = []
    for _, _, index, holders in candidates:
        free = [p for p in holders if load[p] < max_per_parent]
        if not free:
            continue
        if seeds:
            # A seed's upload is for pieces no other parent holds (peer.seed_offer).
            free = [p for p in free if p not in seeds] or free
        least = min(load[p] for p in free)
        parent = rng.choice(sorted(p for p in free if load[p] == least))
        load[parent] += 1
        picks.append((index, parent))
        if len(picks) >= slots:
            break
    return picks
