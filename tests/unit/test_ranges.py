"""``Range`` header parsing.

The property tests hold the parser to RFC 9110 section 14, written out as a small model
below: every single byte range is read as the model reads it (whatever the size of its
numbers or their leading zeros), a range serialised by ``ByteRange.header`` comes back
unchanged, and no header at all makes the parser raise anything but the 416
``ProtocolError``.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from registry_proxy.errors import ProtocolError
from registry_proxy.ranges import ByteRange, parse_range

UNSATISFIABLE = "416"


@pytest.mark.parametrize(
    ("header", "total", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, ByteRange(0, 10)),
        ("bytes=90-", 100, ByteRange(90, 100)),
        ("bytes=90-1000", 100, ByteRange(90, 100)),
        ("bytes=-10", 100, ByteRange(90, 100)),
        ("bytes=-1000", 100, ByteRange(0, 100)),
        ("bytes=5-4", 100, None),  # invalid spec: ignored, whole blob
        ("bytes=0-1,5-6", 100, None),  # multi-range: ignored, whole blob
        ("items=0-1", 100, None),
        ("bytes=-", 100, None),
        ("bytes=\u0661-\u0662", 100, None),  # Arabic-Indic digits are not HTTP digits
        ("bytes=0-" + "9" * 5000, 100, ByteRange(0, 100)),  # more digits than int() takes
        ("bytes=-" + "9" * 5000, 100, ByteRange(0, 100)),
        ("bytes=" + "0" * 5000 + "7-9", 100, ByteRange(7, 10)),
        ("bytes=" + "9" * 41 + "-" + "9" * 40, 100, None),  # last < first, both huge
    ],
)
def test_parse_range(header: str | None, total: int, expected: ByteRange | None) -> None:
    assert parse_range(header, total) == expected


@pytest.mark.parametrize(
    ("header", "total"),
    [
        ("bytes=100-", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        ("bytes=" + "9" * 5000 + "-", 100),
    ],
)
def test_unsatisfiable_range_is_416(header: str, total: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_range(header, total)
    assert caught.value.status == 416
    assert caught.value.detail == {"size": total}


def test_content_range_and_header() -> None:
    byte_range = ByteRange(10, 20)
    assert byte_range.header() == "bytes=10-19"
    assert byte_range.content_range(100) == "bytes 10-19/100"
    assert byte_range.length == 10


# -- the model ----------------------------------------------------------------------------


def model(first: int | None, last: int | None, total: int) -> ByteRange | str | None:
    """RFC 9110 14.1.2 and 14.4 for one range-spec of a blob of ``total`` bytes.

    ``first-last``: ignorable if last < first; unsatisfiable if first >= total; else
    ``[first, min(last, total - 1)]``. ``first-``: to the end. ``-n``: the last n bytes,
    unsatisfiable for n = 0 or an empty blob.
    """
    if first is None:
        assert last is not None
        if last == 0 or total == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, total - last), total)
    if last is not None and last < first:
        return None
    if first >= total:
        return UNSATISFIABLE
    stop = total if last is None else min(last + 1, total)
    return ByteRange(first, stop)


def parsed(header: str, total: int) -> ByteRange | str | None:
    try:
        return parse_range(header, total)
    except ProtocolError as exc:
        assert exc.status == 416 and exc.code == "RANGE_INVALID"
        return UNSATISFIABLE


totals = st.integers(0, 10**12) | st.sampled_from([0, 1, 2, 4 * 1024**2])
# Near the ends of the blob, anywhere, and far past any blob (int() refuses 4300+ digits).
positions = st.integers(0, 300) | st.integers(0, 10**13) | st.integers(10**30, 10**40)


@st.composite
def spelled(draw: st.DrawFn, value: int | None) -> str:
    """A position as a header may spell it: leading zeros are allowed, thousands of them."""
    if value is None:
        return ""
    return "0" * draw(st.integers(0, 3) | st.just(4400)) + str(value)


@given(st.data(), positions | st.none(), positions | st.none(), totals)
def test_single_ranges_are_read_as_rfc_9110_says(
    data: st.DataObject, first: int | None, last: int | None, total: int
) -> None:
    if first is None and last is None:
        header = "bytes=-"
        assert parse_range(header, total) is None
        return
    header = f"bytes={data.draw(spelled(first))}-{data.draw(spelled(last))}"
    assert parsed(header, total) == model(first, last, total)


@given(st.integers(1, 10**15).flatmap(lambda total: st.tuples(st.just(total), st.data())))
def test_a_range_serialised_by_byte_range_round_trips(args: tuple[int, st.DataObject]) -> None:
    total, data = args
    start = data.draw(st.integers(0, total - 1))
    stop = data.draw(st.integers(start + 1, total))
    byte_range = ByteRange(start, stop)
    assert parse_range(byte_range.header(), total) == byte_range
    first, last = byte_range.content_range(total).removeprefix("bytes ").split("/")[0].split("-")
    assert (int(first), int(last) + 1) == (start, stop)


@given(st.text(st.sampled_from("bytes=-0123456789, ") | st.characters(), max_size=60), totals)
@example("bytes=\u0663-", 10)
@example("bytes=1-2,", 10)
@example(" bytes=1-2 ", 10)
def test_no_header_makes_the_parser_raise_anything_but_416(header: str, total: int) -> None:
    result = parsed(header, total)
    if isinstance(result, ByteRange):
        # A range handed out is inside the blob and not empty.
        assert 0 <= result.start < result.stop <= total


@given(
    st.text(st.characters(categories=["Nd"]).filter(lambda c: c not in "0123456789"), min_size=1),
    totals,
)
def test_digits_other_than_ascii_make_the_header_ignorable(digits: str, total: int) -> None:
    assert parse_range(f"bytes={digits}-", total) is None
    assert parse_range(f"bytes=0-{digits}", total) is None
