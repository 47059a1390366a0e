import random

from peer.piece_picker import pick_pieces


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
