"""Piece lists are streamed, or long-polled from a parent that answers a plain list: a
child hears of a parent's new piece at once, and a parent with nothing new is not asked
over and over (``peer.parent_watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from peer.daemon import PeerDaemon
from peer.parent_client import PIECE_LIST_TIMEOUT_S, STREAM_CONTENT_TYPE, ParentClient
from peer.parent_watch import LIST_GAP_S, LIST_WAIT_S, ParentWatch
from peer.piece_server import MAX_LIST_WAIT_S, STREAM_HEARTBEAT_S
from peer.pieces import MiB
from peer.scheduler_client import ParentInfo
from tests.integration.swarm.conftest import TOKEN, SwarmFactory
from tests.support.counting_proxy import CountingProxy
from tests.support.images import push_image_async
from tests.support.polling import until, wait_until
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(60)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def _list(
    session: aiohttp.ClientSession, url: str, **query: Any
) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with session.get(url, params={k: str(v) for k, v in query.items()}) as resp:
        return resp.status, await resp.json(), time.monotonic() - started


@dataclass
class _HalfDone:
    """A peer whose download of a 4-piece blob holds piece 0 while the registry stalls."""

    peer: PeerDaemon
    session: aiohttp.ClientSession
    pieces_url: str


@pytest.fixture
async def half(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
    tmp_path: Path,
) -> AsyncIterator[_HalfDone]:
    image = await push_image_async(
        registry.url, "lists/app", "v1", [4 * MiB], seed=3, work_dir=tmp_path / "image"
    )
    layer = image.layers[0][0]
    # Alone in the swarm, the peer fetches from the registry, which dies after piece 0.
    counting_proxy.stall_after_blob_bytes = 3 * MiB // 2
    peer = await start_swarm_peer("lonely", registry.host, counting_proxy.url)
    blob = str(peer.make_url(f"/v2/{image.repo}/blobs/{layer}?ns={image.registry_host}"))
    pieces_url = f"http://127.0.0.1:{peer.piece_port}/api/v1/tasks/{layer}/pieces"
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        pull = asyncio.create_task(session.get(blob))
        try:
            await asyncio.to_thread(
                wait_until, lambda: peer.engine.running(layer) is not None, 10, "the download"
            )
            status, body, _ = await _list(session, pieces_url, known=0, wait=10)
            assert status == 200 and body["pieces"] == [0] and not body["complete"]
            yield _HalfDone(peer, session, pieces_url)
        finally:
            counting_proxy.stall_after_blob_bytes = None
            counting_proxy.release_stalls()
            with contextlib.suppress(aiohttp.ClientError):
                (await pull).release()


async def test_a_long_poll_answers_when_a_piece_arrives_and_else_after_its_wait(
    half: _HalfDone, counting_proxy: CountingProxy
) -> None:
    session, pieces = half.session, half.pieces_url
    # Nothing new: the answer waits for the whole wait, then repeats the list.
    status, body, took_s = await _list(session, pieces, known=1, wait=0.3)
    assert status == 200 and body["pieces"] == [0]
    assert took_s >= 0.3
    # A count the child does not have yet: the answer comes at once.
    status, body, took_s = await _list(session, pieces, known=3, wait=10)
    assert status == 200 and body["pieces"] == [0] and took_s < 5

    # The registry heals: the waiting child hears of the next piece long before
    # its wait is over.
    waiting = asyncio.create_task(_list(session, pieces, known=1, wait=9))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    counting_proxy.stall_after_blob_bytes = None
    counting_proxy.release_stalls()
    status, body, took_s = await waiting
    assert status == 200 and len(body["pieces"]) > 1 and took_s < 8

    for bad in ({"known": -1, "wait": 1}, {"known": "x"}, {"wait": MAX_LIST_WAIT_S + 1}):
        status, body, _ = await _list(session, pieces, **bad)
        assert status == 400 and "known" in body["error"], bad


async def test_closing_answers_a_waiting_piece_list_at_once(half: _HalfDone) -> None:
    waiting = asyncio.create_task(_list(half.session, half.pieces_url, known=1, wait=10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await half.peer.stop()
    status, body, took_s = await waiting
    assert status == 503 and body == {"error": "this peer is shutting down"}
    assert took_s < 5


async def _line(resp: aiohttp.ClientResponse) -> tuple[bytes, float]:
    started = time.monotonic()
    line = await asyncio.wait_for(resp.content.readline(), STREAM_HEARTBEAT_S + 5)
    return line, time.monotonic() - started


async def test_a_stream_sends_the_list_then_each_change_and_ends_complete(
    half: _HalfDone, counting_proxy: CountingProxy
) -> None:
    session = half.session
    async with session.get(half.pieces_url, params={"stream": "1"}) as resp:
        assert resp.status == 200 and resp.content_type == STREAM_CONTENT_TYPE
        first, _ = await _line(resp)
        body = json.loads(first)
        assert body["pieces"] == [0] and not body["complete"] and not body["seed"]
        assert body["size_bytes"] == 4 * MiB and body["piece_bytes"] == MiB
        # Nothing new while the registry stalls: a heartbeat (an empty line) instead.
        line, waited_s = await _line(resp)
        assert line == b"\n" and waited_s >= STREAM_HEARTBEAT_S / 2
        counting_proxy.stall_after_blob_bytes = None
        counting_proxy.release_stalls()
        # Then the pieces as they come, each once, until the line that says complete.
        seen = [0]
        while True:
            line, _ = await _line(resp)
            if line == b"\n":
                continue
            body = json.loads(line)
            assert set(body) == {"pieces", "complete"}
            seen += body["pieces"]
            if body["complete"]:
                break
        assert sorted(seen) == [0, 1, 2, 3]
        assert await resp.content.read() == b""  # and the stream ends there
    # Asked again, the complete blob answers with a plain list: nothing will change.
    async with session.get(half.pieces_url, params={"stream": "1"}) as resp:
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["pieces"] == [0, 1, 2, 3] and body["complete"]


async def test_closing_ends_a_stream_without_complete(half: _HalfDone) -> None:
    async with half.session.get(half.pieces_url, params={"stream": "1"}) as resp:
        first, _ = await _line(resp)
        assert json.loads(first)["pieces"] == [0]
        stopping = asyncio.create_task(half.peer.stop())
        rest = await asyncio.wait_for(resp.content.read(), 10)
        # At most heartbeats came before the end: never a line saying complete.
        assert rest.strip() == b""
    await stopping


async def test_a_watch_follows_a_real_stream_to_the_end(
    half: _HalfDone, counting_proxy: CountingProxy
) -> None:
    peer = half.peer
    info = ParentInfo("half", "half-host", "127.0.0.1", peer.piece_port, 1.0)
    client = ParentClient(TOKEN, 2.0, 10.0)
    watch = ParentWatch(client, half.pieces_url.split("/")[-2])
    try:
        watch.follow([info])
        while watch.availability != {"half": {0}}:
            await asyncio.wait_for(watch.next_change(), 5)
        counting_proxy.stall_after_blob_bytes = None
        counting_proxy.release_stalls()
        while watch.availability != {"half": {0, 1, 2, 3}}:
            await asyncio.wait_for(watch.next_change(), 5)
        assert watch.take_unreachable() == [] and "half" not in watch.seeds
    finally:
        await watch.close()
        await client.close()


class _StreamingParent:
    """A piece server that streams piece lists from a script: each queued item is a line
    (None ends the stream), and records each request's query."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queries: list[dict[str, str]] = []

    def send(self, pieces: list[int], complete: bool = False, first: bool = False) -> None:
        body: dict[str, Any] = {"pieces": pieces, "complete": complete}
        if first:
            body.update(size_bytes=4, piece_bytes=1, seed=False)
        self.lines.put_nowait(json.dumps(body).encode() + b"\n")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        response = web.StreamResponse(headers={"Content-Type": STREAM_CONTENT_TYPE})
        await response.prepare(request)
        while (line := await self.lines.get()) is not None:
            await response.write(line)
        await response.write_eof()
        return response


async def _stream_served(parent: _StreamingParent) -> tuple[TestServer, ParentInfo]:
    app = web.Application()
    app.router.add_get("/api/v1/tasks/{digest}/pieces", parent.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, ParentInfo("parent", "parent-host", "127.0.0.1", server.port or 0, 1.0)


async def test_streamed_news_waits_while_the_conductor_is_sated(watch: ParentWatch) -> None:
    parent = _StreamingParent()
    server, info = await _stream_served(parent)
    try:
        parent.send([0], first=True)
        watch.follow([info])
        while watch.availability != {"parent": {0}}:
            await asyncio.wait_for(watch.next_change(), 5)
        watch.set_hungry(False)
        change = watch.next_change()
        parent.send([1, 2])
        await until(lambda: watch.availability == {"parent": {0, 1, 2}}, 5, "the news")
        assert not change.done()  # the news is kept, not woken for
        watch.set_hungry(True)
        await asyncio.wait_for(change, 1)
        parent.send([3], complete=True)
        while watch.availability != {"parent": {0, 1, 2, 3}}:
            await asyncio.wait_for(watch.next_change(), 5)
        assert parent.queries == [{"stream": "1"}]  # one request carried it all
    finally:
        parent.lines.put_nowait(None)
        await watch.close()
        await server.close()


async def test_a_stream_ended_early_empties_the_list_and_is_asked_again(
    watch: ParentWatch,
) -> None:
    parent = _StreamingParent()
    server, info = await _stream_served(parent)
    try:
        parent.send([0, 1], first=True)
        watch.follow([info])
        while watch.availability != {"parent": {0, 1}}:
            await asyncio.wait_for(watch.next_change(), 5)
        parent.lines.put_nowait(None)  # the parent's download failed, say
        while watch.availability != {"parent": frozenset()}:
            await asyncio.wait_for(watch.next_change(), 5)
        assert watch.take_unreachable() == []  # it answered: not unreachable
        parent.send([0], first=True)  # the second stream
        while watch.availability != {"parent": {0}}:
            await asyncio.wait_for(watch.next_change(), LIST_GAP_S + 5)
        assert parent.queries == [{"stream": "1"}, {"stream": "1"}]
    finally:
        parent.lines.put_nowait(None)
        await watch.close()
        await server.close()


async def test_a_stream_gone_silent_counts_as_unreachable(watch: ParentWatch) -> None:
    parent = _StreamingParent()
    server, info = await _stream_served(parent)
    try:
        parent.send([0], first=True)  # and then not even a heartbeat: frozen
        watch.follow([info])
        while watch.availability != {"parent": {0}}:
            await asyncio.wait_for(watch.next_change(), 5)
        started = time.monotonic()
        await asyncio.wait_for(watch.next_change(), PIECE_LIST_TIMEOUT_S + 5)
        assert time.monotonic() - started >= PIECE_LIST_TIMEOUT_S / 2
        assert watch.availability == {"parent": frozenset()}
        assert watch.take_unreachable() == ["parent"]
    finally:
        parent.lines.put_nowait(None)
        await watch.close()
        await server.close()


class _FakeParent:
    """A piece server that answers piece lists from a script and records the queries. It
    answers plain lists, also when asked for a stream, as a seed or an older peer does."""

    def __init__(self, complete: bool = False, seed: bool = False) -> None:
        self.complete = complete
        self.seed = seed  # answers at once, as a seed does, so it is asked every gap
        self.pieces = [0]
        self.queries: list[dict[str, str]] = []
        self.connections: list[object] = []  # the client's address of each query
        self.answered = 0
        self.grow = asyncio.Event()
        self.holding = asyncio.Event()  # a long poll is being held
        self._asked = asyncio.Condition()

    async def asked(self, times: int) -> None:
        """Wait until this parent has been asked ``times`` times in all."""
        async with self._asked:
            await asyncio.wait_for(self._asked.wait_for(lambda: len(self.queries) >= times), 5)

    async def handle(self, request: web.Request) -> web.Response:
        async with self._asked:
            self.queries.append(dict(request.query))
            assert request.transport is not None
            self.connections.append(request.transport.get_extra_info("peername"))
            self._asked.notify_all()
        known = request.query.get("known")
        if not self.seed and known is not None and int(known) == len(self.pieces):
            self.holding.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.grow.wait(), float(request.query["wait"]))
            if self.grow.is_set():
                self.grow.clear()
                self.pieces.append(len(self.pieces))
        body = {"size_bytes": 4, "piece_bytes": 1, "complete": self.complete}
        self.answered += 1
        return web.json_response({**body, "pieces": self.pieces, "seed": self.seed})


@contextlib.asynccontextmanager
async def _serving(parent: _FakeParent, name: str = "parent") -> AsyncIterator[ParentInfo]:
    app = web.Application()
    app.router.add_get("/api/v1/tasks/{digest}/pieces", parent.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield ParentInfo(name, f"{name}-host", "127.0.0.1", server.port or 0, 1.0)
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def _watching() -> AsyncIterator[ParentWatch]:
    client = ParentClient(None, 2.0, 10.0)
    watch = ParentWatch(client, "sha256:" + "0" * 64)
    try:
        yield watch
    finally:
        await watch.close()
        await client.close()


@pytest.fixture
async def watch() -> AsyncIterator[ParentWatch]:
    async with _watching() as watch:
        yield watch


@pytest.fixture
async def clock_watch() -> AsyncIterator[ParentWatch]:
    """Another watch, following a seed that answers at once: it marks the time."""
    async with _watching() as watch:
        yield watch


async def test_a_watch_reads_a_complete_parent_once_and_long_polls_a_growing_one(
    watch: ParentWatch,
) -> None:
    complete, growing, seed = _FakeParent(complete=True), _FakeParent(), _FakeParent(seed=True)
    async with (
        _serving(complete) as done_info,
        _serving(growing, "growing") as growing_info,
        _serving(seed, "seed") as seed_info,
    ):
        watch.follow([done_info, growing_info, seed_info])
        while watch.availability != {"parent": {0}, "growing": {0}, "seed": {0}}:
            await asyncio.wait_for(watch.next_change(), 5)
        # The growing parent is now asked with what the child knows, and holds it.
        await asyncio.wait_for(growing.holding.wait(), 5)
        assert growing.queries[1] == {"known": "1", "wait": f"{LIST_WAIT_S:g}"}
        growing.grow.set()
        started = time.monotonic()
        while watch.availability["growing"] != {0, 1}:
            await asyncio.wait_for(watch.next_change(), 5)
        assert time.monotonic() - started < LIST_WAIT_S
        # The seed, asked once per gap, marks the time: two more gaps have passed.
        await seed.asked(len(seed.queries) + 2)
        assert len(complete.queries) == 1  # a complete list cannot change
        assert watch.take_unreachable() == []


async def test_an_unreachable_parent_is_reported_and_its_list_emptied(
    watch: ParentWatch,
) -> None:
    async with _serving(_FakeParent()) as info:
        pass  # the server is gone: its port refuses connections now
    watch.follow([info])
    await asyncio.wait_for(watch.next_change(), 5)
    assert watch.take_unreachable() == ["parent"]
    assert watch.availability == {"parent": frozenset()}
    watch.drop("parent")
    assert watch.availability == {} and watch.take_unreachable() == []


async def test_a_sated_watch_asks_again_only_once_hungry(
    watch: ParentWatch, clock_watch: ParentWatch
) -> None:
    growing, seed = _FakeParent(), _FakeParent(seed=True)
    async with _serving(growing) as info, _serving(seed, "seed") as seed_info:
        watch.set_hungry(False)  # the conductor has more to fetch than slots
        watch.follow([info])
        clock_watch.follow([seed_info])  # hungry: asks the seed once per gap
        change = watch.next_change()
        await until(lambda: watch.availability == {"parent": {0}}, 5, "the first list")
        await seed.asked(len(seed.queries) + 2)  # two more gaps have passed
        assert len(growing.queries) == 1
        assert not change.done()  # sated, the conductor is not woken for the news
        watch.set_hungry(True)
        await asyncio.wait_for(change, 1)
        await asyncio.wait_for(growing.holding.wait(), 5)
        assert growing.queries[1] == {"known": "1", "wait": f"{LIST_WAIT_S:g}"}


async def test_a_dropped_watcher_lets_its_long_poll_finish_and_keeps_the_connection() -> None:
    growing = _FakeParent()
    client = ParentClient(None, 2.0, 10.0)
    watch = ParentWatch(client, "sha256:" + "0" * 64)
    try:
        async with _serving(growing) as info:
            watch.follow([info])
            await asyncio.wait_for(growing.holding.wait(), 5)  # the 2nd query is held
            watch.drop("parent")
            await asyncio.to_thread(wait_until, lambda: client.lingering == 1, 5, "the drop")
            growing.grow.set()  # the held poll is answered; nobody waits for it now
            await asyncio.to_thread(wait_until, lambda: client.lingering == 0, 5, "the poll")
            growing.holding.clear()
            watch.follow([info])  # a new watcher asks at once, then long-polls
            await asyncio.wait_for(growing.holding.wait(), 5)
            # All four queries came over one connection: the drop did not close it.
            assert len(growing.connections) == 4 and len(set(growing.connections)) == 1
            # A poll left lingering when the client closes is cancelled, not awaited.
            await watch.close()
            assert client.lingering == 1
            await client.close()
            assert client.lingering == 0
    finally:
        await watch.close()
        await client.close()
