"""Piece digests computed from the bytes as they arrive, before they are written.

Hashing in the same pass that writes a piece saves reading it back from the file; on a
2-core machine that pass is a large share of a cold download's CPU time.
"""

from __future__ import annotations

import hashlib

from peer.pieces import PieceLayout


class SpanHasher:
    """sha256 of each piece of a run of consecutive pieces, fed in order from any thread.

    ``update`` must be called with consecutive byte runs, one call at a time.
    """

    def __init__(self, layout: PieceLayout, first_index: int) -> None:
        self._layout = layout
        self._index = first_index
        self._position = layout.start(first_index)
        self._hash = hashlib.sha256()
        self.digests: dict[int, str] = {}

    def update(self, chunks: list[bytes], offset: int) -> None:
        if offset != self._position:
            raise ValueError(f"bytes at {offset} arrived while expecting {self._position}")
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                piece_end = self._layout.stop(self._index)
                take = min(len(view), piece_end - self._position)
                self._hash.update(view[:take])
                self._position += take
                view = view[take:]
                if self._position == piece_end:
                    self.digests[self._index] = f"sha256:{self._hash.hexdigest()}"
                    self._index += 1
                    self._hash = hashlib.sha256()
                    if self._index >= self._layout.count:
                        if view:
                            raise ValueError("bytes past the end of the blob")
                        return
