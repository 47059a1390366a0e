"""A piece body is read in large runs (``peer.parent_client._ReadLowWater``), and neither
its last bytes nor the next request on the same connection are ever held back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from peer.parent_client import PIECE_STALL_TIMEOUT_S, READ_LOW_WATER_BYTES, ParentClient
from peer.piece_hasher import SpanHasher
from peer.pieces import PieceLayout
from peer.scheduler_client import ParentInfo

pytestmark = pytest.mark.timeout(60)
TASK = "sha256:" + "0" * 64
# Neither a multiple of the low-water mark nor a size the kernel would hand over in one
# read: the tail is smaller than the mark, so a mark left set would hold it back.
PIECE_BYTES = 3 * READ_LOW_WATER_BYTES + 12_345
SMALL_PIECE_BYTES = READ_LOW_WATER_BYTES // 3
WRITE_BYTES = 16 * 1024


class _SlowParent:
    """Sends each piece a little at a time, as a shaped link delivers it, and lists its
    pieces; records the client address of every request."""

    def __init__(self) -> None:
        self.body = os.urandom(PIECE_BYTES)
        self.peers: list[object] = []

    def _seen(self, request: web.Request) -> None:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))

    async def piece(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        size = PIECE_BYTES if request.match_info["index"] == "0" else SMALL_PIECE_BYTES
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        for start in range(0, size, WRITE_BYTES):
            await response.write(self.body[start : min(size, start + WRITE_BYTES)])
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    async def pieces(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response(
            {"size_bytes": PIECE_BYTES, "piece_bytes": PIECE_BYTES, "complete": True, "pieces": [0]}
        )


@pytest.fixture
async def parent() -> AsyncIterator[tuple[_SlowParent, ParentInfo]]:
    slow = _SlowParent()
    app = web.Application()
    app.router.add_get("/api/v1/tasks/{digest}/pieces", slow.pieces)
    app.router.add_get("/api/v1/tasks/{digest}/pieces/{index}", slow.piece)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield slow, ParentInfo("slow", "slow-host", "127.0.0.1", server.port or 0, 1.0)
    finally:
        await server.close()


async def _fetch(client: ParentClient, info: ParentInfo, index: int, path: Path) -> bytes:
    size = PIECE_BYTES if index == 0 else SMALL_PIECE_BYTES
    hasher = SpanHasher(PieceLayout(size, size), 0)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        await client.fetch_piece(info, TASK, index, fd, 0, size, hasher)
    finally:
        os.close(fd)
    data = await asyncio.to_thread(path.read_bytes)
    assert hasher.digests == {0: f"sha256:{hashlib.sha256(data).hexdigest()}"}
    return data


async def test_pieces_arrive_whole_and_the_connection_serves_the_next_request_at_once(
    parent: tuple[_SlowParent, ParentInfo], tmp_path: Path
) -> None:
    slow, info = parent
    client = ParentClient(None, 2.0, 10.0)
    try:
        for index in (0, 1, 0):
            started = time.monotonic()
            data = await _fetch(client, info, index, tmp_path / "piece")
            assert data == slow.body[: len(data)]
            # A held-back tail would wait for the stall timeout and then fail.
            assert time.monotonic() - started < PIECE_STALL_TIMEOUT_S
            started = time.monotonic()
            listed = await client.piece_list(info, TASK)
            assert listed.pieces == {0}
            assert time.monotonic() - started < PIECE_STALL_TIMEOUT_S
        # One connection carried every request: a mark left set on it would have held
        # back the small list answers that followed each piece.
        assert len(slow.peers) == 6 and len(set(slow.peers)) == 1
    finally:
        await client.close()
