import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.pieces import MiB, PieceLayout, PieceSet, piece_length_for


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, 1 * MiB),
        (1, 1 * MiB),
        (64 * MiB, 1 * MiB),  # 0.5 MiB per piece wanted, clamped up to 1 MiB
        (1000 * MiB, 8 * MiB),  # 7.8 MiB wanted: next power of two
        (1024 * MiB, 8 * MiB),
        (1025 * MiB, 16 * MiB),  # just over 8 MiB wanted
        (100 * 1024 * MiB, 64 * MiB),  # 800 MiB wanted, clamped down to 64 MiB
    ],
)
def test_piece_length_rule(total: int, expected: int) -> None:
    assert piece_length_for(total) == expected


def test_piece_length_bounds_are_configurable() -> None:
    assert piece_length_for(10 * MiB, min_piece_bytes=1 * MiB, max_piece_bytes=2 * MiB) == MiB
    assert piece_length_for(10**12, min_piece_bytes=1 * MiB, max_piece_bytes=2 * MiB) == 2 * MiB


def test_layout_edges() -> None:
    layout = PieceLayout(10, 4)
    assert layout.count == 3
    assert [(layout.start(i), layout.stop(i)) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert list(layout.covering(3, 9)) == [0, 1, 2]
    assert list(layout.covering(4, 8)) == [1]
    assert list(layout.covering(5, 5)) == []
    with pytest.raises(IndexError):
        layout.start(3)
    with pytest.raises(ValueError):
        layout.index_of(10)
    assert PieceLayout(0, 4).count == 0


@given(st.integers(1, 10**9), st.integers(1, 10**8))
def test_pieces_tile_the_blob(total: int, piece: int) -> None:
    layout = PieceLayout(total, piece)
    assert layout.start(0) == 0
    assert layout.stop(layout.count - 1) == total
    assert sum(layout.size(i) for i in (0, layout.count - 1)) <= 2 * piece


def test_piece_set_prefix_advances_over_out_of_order_arrivals() -> None:
    pieces = PieceSet(4)
    pieces.add(2)
    assert pieces.prefix == 0
    pieces.add(0)
    assert pieces.prefix == 1
    pieces.add(1)
    assert pieces.prefix == 3
    assert pieces.missing() == [3]
    pieces.add(3)
    assert pieces.complete and pieces.prefix == 4
    with pytest.raises(IndexError):
        pieces.add(4)
