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
