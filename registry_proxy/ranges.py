"""HTTP ``Range`` header parsing for blob requests (sans-IO).

Only single byte ranges are honoured; RFC 9110 lets a server ignore a multi-range
request and send the whole representation, which is what we do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry_proxy.errors import ProtocolError

_SINGLE_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    """An inclusive-exclusive byte interval ``[start, stop)`` of a blob."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def header(self) -> str:
        """As a ``Range`` request header value."""
        return f"bytes={self.start}-{self.stop - 1}"

    def content_range(self, total_bytes: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{total_bytes}"


def parse_range(header: str | None, total_bytes: int) -> ByteRange | None:
    """The byte range a ``Range`` header asks for, or ``None`` for the whole blob.

    Raises a 416 :class:`ProtocolError` for a syntactically valid range that lies
    outside the blob, and ignores headers we do not understand (multi-range, other
    units), which RFC 9110 permits.
    """
    if header is None:
        return None
    match = _SINGLE_RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or total_bytes == 0:
            raise _unsatisfiable(header, total_bytes)
        return ByteRange(max(0, total_bytes - suffix), total_bytes)
    start = int(first)
    stop = total_bytes if last == "" else min(int(last) + 1, total_bytes)
    if last != "" and int(last) < start:
        return None  # RFC 9110: an invalid range-spec makes the header ignorable.
    if start >= total_bytes:
        raise _unsatisfiable(header, total_bytes)
    return ByteRange(start, stop)


def _unsatisfiable(header: str, total_bytes: int) -> ProtocolError:
    return ProtocolError(
        416,
        "RANGE_INVALID",
        f"range {header!r} is outside the blob of {total_bytes} bytes",
        detail={"size": total_bytes},
    )
