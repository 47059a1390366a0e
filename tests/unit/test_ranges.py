import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_proxy.errors import ProtocolError
from registry_proxy.ranges import ByteRange, parse_range


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
    ],
)
def test_parse_range(header: str | None, total: int, expected: ByteRange | None) -> None:
    assert parse_range(header, total) == expected


@pytest.mark.parametrize(
    ("header", "total"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_range_is_416(header: str, total: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_range(header, total)
    assert caught.value.status == 416


def test_content_range_and_header() -> None:
    byte_range = ByteRange(10, 20)
    assert byte_range.header() == "bytes=10-19"
    assert byte_range.content_range(100) == "bytes 10-19/100"
    assert byte_range.length == 10


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**6))
def test_parsed_ranges_lie_inside_the_blob(first: int, last: int, total: int) -> None:
    try:
        parsed = parse_range(f"bytes={first}-{last}", total)
    except ProtocolError as exc:
        assert exc.status == 416 and first >= total
        return
    if parsed is not None:
        assert 0 <= parsed.start < parsed.stop <= total
