"""The peer's scheduler client over several real schedulers: routing and moving tasks.

Real scheduler apps on loopback ports (and a real redis-server for discovery); the client
is the one ``p2p-peer`` runs (``peer.scheduler_client.SchedulerClient``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from peer.backsource import PieceTransfer
from peer.rendezvous import rank
from peer.scheduler_client import (
    SchedulerClient,
    SchedulerUnavailable,
    UseParents,
)
from scheduler.service.app import REPLICAS_KEY, create_app
from scheduler.service.config import SchedulerConfig
from tests.integration.scheduler.conftest import (
    PIECE_BYTES,
    PIECES,
    TOKEN,
    SchedulerFactory,
    eventually,
    piece_digest,
)
from tests.integration.scheduler.conftest import SchedulerClient as ApiClient
from tests.support.announcements import host_announcement
from tests.support.redis import RedisProcess

pytestmark = pytest.mark.timeout(60)

TASKS = [f"sha256:{i:064x}" for i in range(1, 40)]


def _url(api: ApiClient) -> str:
    return api.url.rstrip("/")


async def _pieces_held(api: ApiClient, peer_id: str) -> int | None:
    """How many pieces ``api``'s scheduler thinks the peer holds; None if unknown there."""
    status = await api.ok("GET", "/api/v1/status")
    for task in status["tasks"]:
        for peer in task["peers"]:
            if peer["peer_id"] == peer_id:
                pieces: int = peer["pieces"]
                return pieces
    return None


async def _register(client: SchedulerClient, peer_id: str, task: str, host_id: str) -> Any:
    return await client.register(
        peer_id, task, host_id, PIECES * PIECE_BYTES, PIECE_BYTES, [], None
    )


def _origin_piece(index: int) -> PieceTransfer:
    return PieceTransfer(index, None, PIECE_BYTES, 0.01, True, piece_digest(index))


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[SchedulerClient] = []

    def make(*urls: str) -> SchedulerClient:
        client = SchedulerClient(",".join(urls), TOKEN)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_tasks_go_to_their_owner_and_hosts_to_every_replica(
    make_scheduler: SchedulerFactory, client_for: Any
) -> None:
    apis = [await make_scheduler(), await make_scheduler()]
    urls = [_url(api) for api in apis]
    client = client_for(*urls)
    ttl_s, new_host = await client.announce(host_announcement("h1"))
    assert new_host and ttl_s > 0
    for api in apis:
        assert (await api.health())["hosts"] == 1
    for task in TASKS[:10]:
        await _register(client, f"h1_{task[7:]}", task, "h1")
    for api, url in zip(apis, urls, strict=True):
        owned = {t for t in TASKS[:10] if rank(t, urls)[0] == url}
        status = await api.ok("GET", "/api/v1/status")
        assert {t["task_id"] for t in status["tasks"]} == owned
    # Announcing again reports nothing new: the same live replicas, hosts known.
    assert (await client.announce(host_announcement("h1")))[1] is False


async def test_a_dead_owner_s_peers_move_to_the_next_replica_with_their_pieces(
    make_scheduler: SchedulerFactory, client_for: Any
) -> None:
    apis = {}
    for _ in range(2):
        api = await make_scheduler()
        apis[_url(api)] = api
    urls = list(apis)
    client = client_for(*urls)
    await client.announce(host_announcement("h1"))
    task = TASKS[0]
    owner, successor = rank(task, urls)
    peer_id = f"h1_{task[7:]}"
    await _register(client, peer_id, task, "h1")
    await client.report(peer_id, [_origin_piece(0), _origin_piece(1)])
    assert await _pieces_held(apis[owner], peer_id) == 2
    assert await _pieces_held(apis[successor], peer_id) is None

    await apis[owner].server.close()  # the owner dies mid-download
    decision = await client.schedule(peer_id)
    # The successor has the peer, with the pieces it reported to the dead owner, and
    # decided for it (a peer alone with the origin: back to source).
    assert await _pieces_held(apis[successor], peer_id) == 2
    assert not isinstance(decision, UseParents) or not decision.parents
    # Reports and the digests in them now land at the successor.
    await client.report(peer_id, [_origin_piece(2)])
    assert await _pieces_held(apis[successor], peer_id) == 3
    assert set(await client.task_digests(task)) == {2}
    await client.finished(peer_id)
    assert await _pieces_held(apis[successor], peer_id) == PIECES
    # The announce loop hears that tasks changed owners (cached blobs to register).
    assert (await client.announce(host_announcement("h1")))[1] is True


async def test_every_replica_down_is_unavailable(
    make_scheduler: SchedulerFactory, client_for: Any
) -> None:
    apis = [await make_scheduler(), await make_scheduler()]
    client = client_for(*(_url(api) for api in apis))
    await client.announce(host_announcement("h1"))
    for api in apis:
        await api.server.close()
    with pytest.raises(SchedulerUnavailable):
        await _register(client, f"h1_{TASKS[0][7:]}", TASKS[0], "h1")


async def test_a_restarted_replica_gets_the_host_and_the_peer_again(
    make_scheduler: SchedulerFactory, client_for: Any
) -> None:
    api = await make_scheduler()
    url = _url(api)
    client = client_for(url)
    await client.announce(host_announcement("h1"))
    task = TASKS[0]
    peer_id = f"h1_{task[7:]}"
    await _register(client, peer_id, task, "h1")
    await client.report(peer_id, [_origin_piece(0)])

    port = api.server.port
    await api.server.close()
    # A new, empty scheduler on the same address: it knows neither the host nor the peer.
    restarted = TestServer(create_app(SchedulerConfig(token=TOKEN)), host="127.0.0.1", port=port)
    await restarted.start_server()
    try:
        again = ApiClient(restarted, api.session, TOKEN)
        await client.schedule(peer_id)
        assert (await again.health())["hosts"] == 1
        assert await _pieces_held(again, peer_id) == 1
    finally:
        await restarted.close()


async def test_a_peer_given_one_replica_learns_the_others_from_redis(
    redis_server: RedisProcess, client_for: Any
) -> None:
    servers = []
    try:
        for _ in range(2):
            config = SchedulerConfig(
                token=TOKEN,
                redis_url=redis_server.url,
                replica_heartbeat_s=0.1,
                replica_ttl_s=0.6,
            )
            app = create_app(config)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            await app[REPLICAS_KEY].start(str(server.make_url("")).rstrip("/"))
            servers.append(server)
        urls = sorted(str(s.make_url("")).rstrip("/") for s in servers)
        first = client_for(urls[0])

        async def learned() -> bool:
            await first.announce(host_announcement("h1"))  # every announcement reads the list again
            return first.router.live() == tuple(urls)

        await eventually(learned, 5, "the peer to learn both replicas")
        assert first.router.view.shared
        # And it routes over both: each task goes to its owner among the two.
        for task in TASKS[:10]:
            await _register(first, f"h1_{task[7:]}", task, "h1")
        async with aiohttp.ClientSession() as session:
            for server in servers:
                url = str(server.make_url("")).rstrip("/")
                status = await ApiClient(server, session, TOKEN).ok("GET", "/api/v1/status")
                owned = {t for t in TASKS[:10] if rank(t, urls)[0] == url}
                assert {t["task_id"] for t in status["tasks"]} == owned
    finally:
        for server in servers:
            await server.close()
