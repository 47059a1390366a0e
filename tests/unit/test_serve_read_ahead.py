"""The mirror's copy loop asks the kernel to read ahead only within the range it sends."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from peer import serve


class _Collector:
    """Stands in for the aiohttp response: keeps what is written."""

    def __init__(self) -> None:
        self.body = bytearray()

    async def write(self, data: bytes) -> None:
        self.body += data


@pytest.mark.parametrize(
    ("start", "count"),
    [(0, 100), (5, 3 * 1024 * 1024 + 7), (1024, serve.READ_AHEAD_BYTES + 1)],
)
def test_read_ahead_stays_inside_the_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: int, count: int
) -> None:
    data = os.urandom(start + count + serve.READ_AHEAD_BYTES)  # the file goes on past it
    path = tmp_path / "blob"
    path.write_bytes(data)
    advice: list[tuple[int, int, int]] = []
    real_fadvise = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, kind: int) -> None:
        advice.append((offset, length, kind))
        real_fadvise(fd, offset, length, kind)

    monkeypatch.setattr(serve.os, "posix_fadvise", spy)
    out = _Collector()
    fd = os.open(path, os.O_RDONLY)
    try:
        response: Any = out
        asyncio.run(serve._copy_out(response, fd, start, count))
    finally:
        os.close(fd)
    assert bytes(out.body) == data[start : start + count]
    will_need = [(o, n) for o, n, kind in advice if kind == os.POSIX_FADV_WILLNEED]
    assert will_need, "the copy never asked for read-ahead"
    for offset, length in will_need:
        assert start <= offset and offset + length <= start + count
