"""Piece digests computed from the bytes as they arrive, before they are written.

Hashing in the same pass that writes a piece saves reading it back from the file; on a
2-core machine that pass is a large share of a cold download's CPU time. For the same
reason the hasher can keep a finished piece's bytes (views of the received chunks, no
copy) so the blob's in-order sha256 reads them from memory too (``BlobTask`` decides
which pieces are worth keeping: those the in-order pass will reach soon).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from peer.pieces import PieceLayout


class SpanHasher:
    """sha256 of each piece of a run of consecutive pieces, fed in order from any thread.

    ``update`` must be called with consecutive byte runs, one call at a time.
    ``keep(index)``, asked as a piece starts, says whether to keep its bytes in
    ``kept[index]`` once it is complete.
    """

    def __init__(
        self,
        layout: PieceLayout,
        first_index: int,
        keep: Callable[[int], bool] | None = None,
    ) -> None:
        self._layout = layout
        self._index = first_index
        self._position = layout.start(first_index)
        self._hash = hashlib.sha256()
        self._keep = keep
        self._views: list[memoryview] | None = self._start_views()
        self.digests: dict[int, str] = {}
        self.kept: dict[int, list[memoryview]] = {}

    def update(self, chunks: list[bytes], offset: int) -> None:
        if offset != self._position:
            raise ValueError(f"bytes at {offset} arrived while expecting {self._position}")
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                piece_end = self._layout.stop(self._index)
                take = min(len(view), piece_end - self._position)
                part = view[:take]
                self._hash.update(part)
                if self._views is not None:
                    self._views.append(part)
                self._position += take
                view = view[take:]
                if self._position == piece_end:
                    self._piece_done()
                    if self._index >= self._layout.count:
                        if view:
                            raise ValueError("bytes past the end of the blob")
                        return

    def _piece_done(self) -> None:
        self.digests[self._index] = f"sha256:{self._hash.hexdigest()}"
        if self._views is not None:
            self.kept[self._index] = self._views
        self._index += 1
        self._hash = hashlib.sha256()
        self._views = self._start_views()

    def _start_views(self) -> list[memoryview] | None:
        if self._keep is None or self._index >= self._layout.count:
            return None
        return [] if self._keep(self._index) else None
