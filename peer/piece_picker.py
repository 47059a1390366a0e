"""Which pieces to ask which parents for next (sans-IO; the simulator runs it too).

Two needs pull apart. A client streaming the blob wants pieces in index order, while
the swarm wants each peer to hold *different* pieces early, so peers can trade. The
picker looks only at a short window at the front of what is missing (streaming: nothing
far ahead is fetched before what the client needs next), and inside that window takes
the rarest pieces among the parents first (spread), lowest index breaking ties. Each
piece goes to the least busy parent holding it, ties broken at random so that many
children do not all queue at the same parent.
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
) -> list[tuple[int, str]]:
    """Up to ``slots`` (piece, parent) requests to start now.

    ``missing`` are the pieces neither present nor in flight, ascending; ``availability``
    maps each parent to the pieces it holds; ``parent_load`` counts requests already in
    flight per parent, and no parent gets more than ``max_per_parent``.
    """
    if slots <= 0 or not missing:
        return []
    load = {parent: parent_load.get(parent, 0) for parent in availability}
    candidates: list[tuple[int, int, list[str]]] = []  # (rarity, index, holders)
    for index in missing:
        holders = [p for p, pieces in availability.items() if index in pieces]
        if holders:
            candidates.append((len(holders), index, holders))
            if len(candidates) >= window:
                break
    candidates.sort(key=lambda c: (c[0], c[1]))
    picks: list[tuple[int, str]] = []
    for _, index, holders in candidates:
        free = [p for p in holders if load[p] < max_per_parent]
        if not free:
            continue
        least = min(load[p] for p in free)
        parent = rng.choice(sorted(p for p in free if load[p] == least))
        load[parent] += 1
        picks.append((index, parent))
        if len(picks) >= slots:
            break
    return picks
