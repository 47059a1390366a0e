"""HTTP ``Range`` header parsing for blob requests (sans-IO).

Only single byte ranges are honoured; RFC 9110 lets a server ignore a multi-range
request and send the whole representation, which is what we do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry_proxy.errors import ProtocolError

# ASCII digits only (RFC 9110's DIGIT): ``\d`` would also take Arabic-Indic and other digits.
_SINGLE_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# Positions with more digits than this are past the end of any blob. They are not
# converted: int() refuses more than 4300 digits, and a header may hold 8 KB of them.
_MAX_POSITION_DIGITS = 30
_PAST_ANY_BLOB: int = 10**_MAX_POSITION_DIGITS


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
        suffix = _position(last)
        if suffix == 0 or total_bytes == 0:
            raise _unsatisfiable(header, total_bytes)
        return ByteRange(max(0, total_bytes - suffix), total_bytes)
    start = _position(first)
    if last == "":
        stop = total_bytes
    else:
        if _order(last) < _order(first):
            return None  # RFC 9110: an invalid range-spec makes the header ignorable.
        stop = min(_position(last) + 1, total_bytes)
    if start >= total_bytes:
        raise _unsatisfiable(header, total_bytes)
    return ByteRange(start, stop)


def _position(digits: str) -> int:
    """The value of a run of ASCII digits, capped past the end of any blob."""
    significant = digits.lstrip("0")
    if len(significant) > _MAX_POSITION_DIGITS:
        return _PAST_ANY_BLOB
    return int(significant or "0")


def _order(digits: str) -> tuple[int, str]:
    """Sorts runs of ASCII digits by value, however long, without converting them."""
    significant = digits.lstrip("0")
    return len(significant), significant


def _unsatisfiable(header: str, total_bytes: int) -> ProtocolError:
    return ProtocolError(
        416,
        "RANGE_INVALID",
        f"range {header!r} is outside the blob of {total_bytes} bytes",
        detail={"size": total_bytes},
    )
