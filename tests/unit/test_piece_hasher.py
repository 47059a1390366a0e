import hashlib

import pytest

from peer.piece_hasher import SpanHasher
from peer.pieces import PieceLayout


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_digests_of_each_piece_whatever_the_chunking() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes, pieces of 4096: 4096, 4096, 2048
    layout = PieceLayout(len(data), 4096)
    hasher = SpanHasher(layout, 1)
    chunks = [data[4096:5000], data[5000:9000], data[9000:]]
    hasher.update(chunks[:2], 4096)
    hasher.update(chunks[2:], 9000)
    assert hasher.digests == {1: _sha(data[4096:8192]), 2: _sha(data[8192:])}


def test_bytes_must_arrive_in_order() -> None:
    hasher = SpanHasher(PieceLayout(100, 10), 0)
    with pytest.raises(ValueError):
        hasher.update([b"x" * 5], 5)


def test_keeps_the_bytes_of_the_pieces_asked_for() -> None:
    data = bytes(range(256)) * 40
    layout = PieceLayout(len(data), 4096)
    hasher = SpanHasher(layout, 0, keep=lambda index: index != 1)
    hasher.update([data[:3000], data[3000:7000]], 0)
    hasher.update([data[7000:]], 7000)
    assert set(hasher.kept) == {0, 2}
    assert b"".join(hasher.kept[0]) == data[:4096]
    assert b"".join(hasher.kept[2]) == data[8192:]
    assert hasher.digests == {i: _sha(data[i * 4096 : (i + 1) * 4096]) for i in range(3)}
