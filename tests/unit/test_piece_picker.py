import random

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.piece_picker import (
    lowest_bits,
    pick_pieces,
    pick_pieces_masked,
    stripe_blocks,
    stripe_mask,
    within_stripe,
)


def test_the_next_piece_first_then_a_spread_inside_the_window() -> None:
    orders = set()
    for seed in range(20):
        picks = pick_pieces(
            list(range(100)),
            {"a": set(range(100))},
            {},
            slots=3,
            max_per_parent=8,
            window=16,
            rng=random.Random(seed),
        )
        indices = [index for index, _ in picks]
        assert indices[0] == 0  # the client streaming the blob waits on it
        assert all(index < 16 for index in indices)
        orders.add(tuple(indices))
    # Children that see the same single parent do not all fetch the same pieces.
    assert len(orders) > 5


def test_rarest_first_inside_the_window_only() -> None:
    availability = {"a": set(range(10)), "b": set(range(10)) - {3}, "c": {3, 50}}
    availability["b"].discard(5)
    availability["c"].discard(3)
    picks = pick_pieces(
        list(range(10)) + [50],
        availability,
        {},
        slots=2,
        max_per_parent=8,
        window=8,
        rng=random.Random(1),
    )
    # 0 first (the client waits on it), then 3 or 5 (one holder each, the rarest);
    # 50 is outside the window.
    indices = [index for index, _ in picks]
    assert indices[0] == 0 and indices[1] in (3, 5)


def test_busy_parents_are_skipped_and_load_is_spread() -> None:
    availability = {"a": set(range(10)), "b": set(range(10))}
    picks = pick_pieces(
        list(range(10)),
        availability,
        {"a": 2},
        slots=4,
        max_per_parent=2,
        window=10,
        rng=random.Random(3),
    )
    assert [parent for _, parent in picks] == ["b", "b"]  # a is full, b takes two


def test_nothing_to_pick() -> None:
    rng = random.Random(0)
    assert pick_pieces([], {"a": {1}}, {}, 4, 2, 8, rng) == []
    assert pick_pieces([1, 2], {"a": {5}}, {}, 4, 2, 8, rng) == []
    assert pick_pieces([1], {"a": {1}}, {}, 0, 2, 8, rng) == []


def test_ties_between_parents_are_broken_at_random_but_deterministically() -> None:
    availability = {p: {0} for p in "abcdef"}
    first = pick_pieces([0], availability, {}, 1, 1, 4, random.Random(7))
    assert first == pick_pieces([0], availability, {}, 1, 1, 4, random.Random(7))
    chosen = {
        pick_pieces([0], availability, {}, 1, 1, 4, random.Random(s))[0][1] for s in range(30)
    }
    assert len(chosen) > 1


def test_a_seed_is_asked_only_for_pieces_no_other_parent_holds() -> None:
    availability = {"seed": set(range(8)), "p": {0, 1, 2, 3}}
    for s in range(20):
        picks = pick_pieces(
            list(range(8)),
            availability,
            {},
            slots=6,
            max_per_parent=4,
            window=16,
            rng=random.Random(s),
            seeds={"seed"},
        )
        for index, parent in picks:
            assert parent == ("p" if index < 4 else "seed"), (index, parent)


def _reference_picks(
    missing: list[int],
    availability: dict[str, set[int]],
    parent_load: dict[str, int],
    slots: int,
    max_per_parent: int,
    window: int,
    rng: random.Random,
    seeds: set[str],
) -> list[tuple[int, str]]:
    """The picker's rule spelled out plainly: the window's candidates with their holders,
    one random tie each (the first piece excepted), one sort, then the picks."""
    if slots <= 0 or not missing:
        return []
    load = {parent: parent_load.get(parent, 0) for parent in availability}
    candidates: list[tuple[int, float, int, list[str]]] = []
    for index in missing:
        holders = [p for p, pieces in availability.items() if index in pieces]
        if holders:
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
            free = [p for p in free if p not in seeds] or free
        least = min(load[p] for p in free)
        parent = rng.choice(sorted(p for p in free if load[p] == least))
        load[parent] += 1
        picks.append((index, parent))
        if len(picks) >= slots:
            break
    return picks


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.integers(1, 80),
    holdings=st.lists(st.sets(st.integers(0, 79)), min_size=0, max_size=6),
    absent=st.sets(st.integers(0, 79)),
    loads=st.lists(st.integers(0, 5), min_size=6, max_size=6),
    slots=st.integers(0, 10),
    max_per_parent=st.integers(1, 4),
    window=st.integers(0, 20),
    seeded=st.integers(0, 2),
    seed=st.integers(0, 2**32),
)
def test_set_and_mask_pickers_follow_the_reference_rule_and_random_stream(
    pieces: int,
    holdings: list[set[int]],
    absent: set[int],
    loads: list[int],
    slots: int,
    max_per_parent: int,
    window: int,
    seeded: int,
    seed: int,
) -> None:
    names = [f"p{i}" for i in range(len(holdings))]
    availability = {
        name: {i for i in held if i < pieces} for name, held in zip(names, holdings, strict=True)
    }
    missing = [i for i in range(pieces) if i not in absent]
    parent_load = dict(zip(names, loads[: len(names)], strict=True))
    seeds = set(names[:seeded])
    args = (parent_load, slots, max_per_parent, window)
    expected_rng, set_rng, mask_rng = (random.Random(seed) for _ in range(3))
    expected = _reference_picks(missing, availability, *args, expected_rng, seeds)
    assert pick_pieces(missing, availability, *args, set_rng, seeds) == expected
    masks = {name: sum(1 << i for i in held) for name, held in availability.items()}
    missing_mask = sum(1 << i for i in missing)
    assert pick_pieces_masked(missing_mask, masks.items(), *args, mask_rng, seeds) == expected
    # The same numbers were drawn: the next one agrees.
    assert set_rng.random() == mask_rng.random() == expected_rng.random()


@given(mask=st.integers(0, 2**200), count=st.integers(0, 40))
def test_lowest_bits_keeps_the_lowest_set_bits(mask: int, count: int) -> None:
    expected = 0
    rest = mask
    for _ in range(count):
        if not rest:
            break
        lowest = rest & -rest
        expected |= lowest
        rest ^= lowest
    assert lowest_bits(mask, count) == expected


def test_parents_in_other_racks_offer_only_the_stripe() -> None:
    availability = {"far": set(range(8)), "mate": {1, 2}, "seed": {5, 6}}
    striped = within_stripe(availability, {"far"}, (1, 3))
    assert striped == {"far": {1, 4, 7}, "mate": {1, 2}, "seed": {5, 6}}
    picks = pick_pieces(list(range(8)), striped, {}, 8, 8, 16, random.Random(1))
    assert {index for index, parent in picks if parent == "far"} <= {1, 4, 7}
    assert sorted(index for index, _ in picks) == [1, 2, 4, 5, 6, 7]
    # No stripe, or no parent in another rack: the lists as they are.
    assert within_stripe(availability, {"far"}, None) is availability
    assert within_stripe(availability, set(), (1, 3)) is availability


def test_a_stripe_gives_way_only_when_it_leaves_the_peer_idle() -> None:
    assert stripe_blocks((1, 3), picks=[], in_flight=0)
    assert not stripe_blocks((1, 3), picks=[], in_flight=2)  # wait for those
    assert not stripe_blocks((1, 3), picks=[(1, "far")], in_flight=0)
    assert not stripe_blocks(None, picks=[], in_flight=0)


@settings(max_examples=200)
@given(
    pieces=st.integers(1, 80),
    count=st.integers(1, 9),
    index=st.integers(0, 8),
    holdings=st.lists(st.sets(st.integers(0, 79)), min_size=1, max_size=5),
    striped=st.integers(0, 5),
    seed=st.integers(0, 2**32),
)
def test_striped_sets_and_striped_masks_make_the_same_picks(
    pieces: int, count: int, index: int, holdings: list[set[int]], striped: int, seed: int
) -> None:
    stripe = (index % count, count)
    mask = stripe_mask(stripe, pieces)
    assert [i for i in range(pieces) if mask >> i & 1] == list(range(stripe[0], pieces, count))
    names = [f"p{i}" for i in range(len(holdings))]
    others = set(names[:striped])
    availability = {
        name: {i for i in held if i < pieces} for name, held in zip(names, holdings, strict=True)
    }
    masks = [
        (name, sum(1 << i for i in held) & (mask if name in others else -1))
        for name, held in availability.items()
    ]
    missing = list(range(pieces))
    set_rng, mask_rng = random.Random(seed), random.Random(seed)
    from_sets = pick_pieces(
        missing, within_stripe(availability, others, stripe), {}, 6, 2, 10, set_rng
    )
    from_masks = pick_pieces_masked((1 << pieces) - 1, masks, {}, 6, 2, 10, mask_rng)
    assert from_sets == from_masks
