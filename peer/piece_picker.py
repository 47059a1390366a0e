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

Two entry points make the same picks from the same random stream: ``pick_pieces`` takes
piece sets (the conductor's piece lists), ``pick_pieces_masked`` takes bitmasks (bit i:
piece i); the first finds the window's candidates and hands them to the second, which
the simulator calls directly, hundreds of thousands of times a run.

In a rack, the scheduler may give a peer a stripe (``scheduler.core.stripes``): parents
in other racks then count as holding only the pieces of its stripe. The conductor passes
its piece lists through ``within_stripe``, the simulator ANDs those parents' masks with
``stripe_mask``; both pick again from the whole lists when that left the peer idle
(``stripe_blocks``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence, Set
from itertools import repeat, starmap

# (index, count): the pieces i with i % count == index.
Stripe = tuple[int, int]


def stripe_blocks(stripe: Stripe | None, picks: Sequence[object], in_flight: int) -> bool:
    """Whether to pick again without the stripe: it left the peer with nothing to fetch
    and nothing in flight. A stripe that other racks cannot serve right now, or whose
    pieces rack-mates do not hold yet, must never stall a peer."""
    return stripe is not None and not picks and not in_flight


def within_stripe(
    availability: Mapping[str, Set[int]], striped: Set[str], stripe: Stripe | None
) -> Mapping[str, Set[int]]:
    """``availability`` with the parents in ``striped`` (other racks') holding only the
    pieces of ``stripe`` (None: all they hold)."""
    if stripe is None or not striped:
        return availability
    index, count = stripe
    return {
        parent: frozenset(p for p in pieces if p % count == index) if parent in striped else pieces
        for parent, pieces in availability.items()
    }


def without_held(
    availability: Mapping[str, Set[int]], remote: Set[str], held: Set[int]
) -> Mapping[str, Set[int]]:
    """``availability`` with the parents in ``remote`` (other racks') not offering the
    pieces in ``held``: a rack-mate claimed them (``scheduler.core.claims``)."""
    if not held or not remote:
        return availability
    return {
        parent: pieces - held if parent in remote else pieces
        for parent, pieces in availability.items()
    }


def stripe_mask(stripe: Stripe, pieces: int) -> int:
    """The bitmask of the stripe's pieces among ``pieces``."""
    index, count = stripe
    mask = 0
    for piece in range(index, pieces, count):
        mask |= 1 << piece
    return mask


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
    parents = list(availability.items())
    masks = dict.fromkeys(availability, 0)
    candidates = 0
    found = 0
    for index in missing:
        holders = [p for p, pieces in parents if index in pieces]
        if holders:
            bit = 1 << index
            candidates |= bit
            for parent in holders:
                masks[parent] |= bit
            found += 1
            if found >= window:
                break
    return pick_pieces_masked(
        candidates, masks.items(), parent_load, slots, max_per_parent, window, rng, seeds
    )


def pick_pieces_masked(
    missing_mask: int,
    availability: Iterable[tuple[str, int]],
    parent_load: Mapping[str, int],
    slots: int,
    max_per_parent: int,
    window: int,
    rng: random.Random,
    seeds: Set[str] = frozenset(),
) -> list[tuple[int, str]]:
    """``pick_pieces`` with bitmasks: ``missing_mask`` bit i for piece i missing, and
    ``availability`` pairing each parent with the mask of pieces it holds.

    The same arguments as sets give the same picks and draw the same random numbers.
    Every candidate but the first draws its random tie, in index order, before any
    parent is chosen, so the stream does not depend on how many picks are made. A
    candidate that no parent with a free request slot holds yields nothing, so it is
    skipped; once none is left, so is ranking the rest (often: one slot, filled by the
    first candidate).
    """
    if slots <= 0 or not missing_mask:
        return []
    held: list[tuple[str, int]] = []  # parents holding a candidate, with what they hold
    load: dict[str, int] = {}
    candidates = 0
    free = 0  # pieces some parent with a free request slot holds
    for parent, mask in availability:
        mask &= missing_mask
        if mask:
            held.append((parent, mask))
            candidates |= mask
            load[parent] = requests = parent_load.get(parent, 0)
            if requests < max_per_parent:
                free |= mask
    if not candidates:
        return []
    count = candidates.bit_count()
    if count > window:
        # The lowest candidate is looked at whatever the window (``pick_pieces`` always
        # took the first piece some parent holds).
        count = max(window, 1)
        candidates = lowest_bits(candidates, count)
    # ``starmap`` calls ``rng.random()`` count - 1 times without a Python loop.
    ties = list(starmap(rng.random, repeat((), count - 1)))
    picks: list[tuple[int, str]] = []
    bit = candidates & -candidates  # the lowest goes first whatever its rarity
    pending = candidates  # not visited yet
    order: list[int] | None = None
    while True:
        pending ^= bit
        if free & bit:
            choices = [p for p, mask in held if mask & bit and load[p] < max_per_parent]
            if seeds:
                # A seed's upload is for pieces no other parent holds (peer.seed_offer).
                choices = [p for p in choices if p not in seeds] or choices
            if len(choices) > 1:
                least = min([load[p] for p in choices])
                choices = sorted([p for p in choices if load[p] == least])
            parent = rng.choice(choices)
            load[parent] += 1
            picks.append((bit.bit_length() - 1, parent))
            if len(picks) >= slots:
                break
            if load[parent] >= max_per_parent:
                free = 0
                for other, mask in held:
                    if load[other] < max_per_parent:
                        free |= mask
        if not free & pending:
            break
        if order is None:
            order = _ranked(pending, held, ties)
        bit = order.pop()
    return picks


def _ranked(rest: int, held: list[tuple[str, int]], ties: list[float]) -> list[int]:
    """The pieces of ``rest`` (every candidate but the lowest) as bits, by (holders, tie)
    from last to first; ``ties[j]`` belongs to the (j + 1)-th lowest candidate."""
    keyed: list[tuple[int, float, int]] = []
    for tie in ties:
        bit = rest & -rest
        rest ^= bit
        holders = 0
        for _, mask in held:
            if mask & bit:
                holders += 1
        # The bit breaks exact ties by index, as one stable sort of all candidates did.
        keyed.append((holders, tie, bit))
    keyed.sort(reverse=True)
    return [bit for _, _, bit in keyed]


def lowest_bits(mask: int, count: int) -> int:
    """The ``count`` lowest set bits of ``mask`` (all of them if it has fewer).

    Searches for the end of the range holding them: from the lowest set bit, the range
    grows each round by the bits still missing, the fewest positions that can hold them,
    so it never overshoots. Pieces are fetched roughly in order, so the bits are dense
    and one or two rounds do (clearing ``count`` bits one by one took ``count`` rounds).
    """
    if mask.bit_count() <= count:
        return mask
    end = (mask & -mask).bit_length() - 1 + count
    while True:
        below = mask & ((1 << end) - 1)
        short = count - below.bit_count()
        if not short:
            return below
        end += short
