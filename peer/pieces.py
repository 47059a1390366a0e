"""Piece math (sans-IO): how a blob is cut into pieces and which pieces cover a range.

A blob of ``total_bytes`` is cut into pieces of one power-of-two length chosen so that a
blob has about ``target_pieces`` pieces, within ``[min_piece_bytes, max_piece_bytes]``:
small blobs get few pieces of the minimum length, huge blobs do not get thousands.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
# About 128 pieces a blob, from 1 MiB to 64 MiB: a 64 MiB layer gets 64 pieces of 1 MiB,
# a 1 GiB layer 128 of 8 MiB (Dragonfly's rule gives 9 MiB). Small blobs need small
# pieces: a peer can pass a piece on only once it holds all of it, so few large pieces
# leave a swarm waiting (p2psim on the swarm benchmark's network, 40 Mbit/s uplinks and
# a 64 MiB image: 1.5x the makespan with 4 MiB pieces than with 1 MiB). Large blobs
# need no more pieces than that: at 10 Gbps the makespan of a 1 GiB image is the same
# with 128 or 512 pieces, and each piece costs a request, a report and a digest.
DEFAULT_MIN_PIECE_BYTES = 1 * MiB
DEFAULT_MAX_PIECE_BYTES = 64 * MiB
DEFAULT_TARGET_PIECES = 128


def piece_length_for(
    total_bytes: int,
    min_piece_bytes: int = DEFAULT_MIN_PIECE_BYTES,
    max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES,
    target_pieces: int = DEFAULT_TARGET_PIECES,
) -> int:
    """Next power of two of ``ceil(total_bytes / target_pieces)``, clamped to the bounds."""
    if total_bytes < 0:
        raise ValueError("total_bytes must be >= 0")
    wanted = max(1, -(-total_bytes // target_pieces))
    power = 1 << (wanted - 1).bit_length()
    return max(min_piece_bytes, min(max_piece_bytes, power))


@dataclass(frozen=True)
class PieceLayout:
    """The pieces of one blob: piece ``i`` covers ``[i*piece_bytes, (i+1)*piece_bytes)``."""

    total_bytes: int
    piece_bytes: int

    def __post_init__(self) -> None:
        if self.piece_bytes <= 0 or self.total_bytes < 0:
            raise ValueError("piece_bytes must be > 0 and total_bytes >= 0")

    @property
    def count(self) -> int:
        return -(-self.total_bytes // self.piece_bytes)

    def start(self, index: int) -> int:
        self._check(index)
        return index * self.piece_bytes

    def stop(self, index: int) -> int:
        self._check(index)
        return min(self.total_bytes, (index + 1) * self.piece_bytes)

    def size(self, index: int) -> int:
        return self.stop(index) - self.start(index)

    def index_of(self, offset: int) -> int:
        """The piece holding byte ``offset``."""
        if not 0 <= offset < self.total_bytes:
            raise ValueError(f"offset {offset} outside blob of {self.total_bytes} bytes")
        return offset // self.piece_bytes

    def covering(self, start: int, stop: int) -> range:
        """Indices of the pieces that hold any byte of ``[start, stop)``."""
        if start >= stop:
            return range(0)
        return range(self.index_of(start), self.index_of(stop - 1) + 1)

    def _check(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"piece {index} outside 0..{self.count - 1}")


class PieceSet:
    """Which pieces of a blob are present, and how far the contiguous prefix reaches."""

    def __init__(self, count: int, present: set[int] | None = None) -> None:
        self.count = count
        self._present: set[int] = set()
        self.prefix = 0  # pieces 0..prefix-1 are all present
        for index in present or ():
            self.add(index)

    def add(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"piece {index} outside 0..{self.count - 1}")
        self._present.add(index)
        while self.prefix in self._present:
            self.prefix += 1

    def __contains__(self, index: object) -> bool:
        return index in self._present

    def __len__(self) -> int:
        return len(self._present)

    @property
    def complete(self) -> bool:
        return len(self._present) == self.count

    def missing(self) -> list[int]:
        """Absent pieces in index order: the order a streaming client needs them."""
        return [i for i in range(self.count) if i not in self._present]

    def present(self) -> list[int]:
        return sorted(self._present)
