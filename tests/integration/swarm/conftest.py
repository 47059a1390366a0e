"""A swarm in one process: the real scheduler app and real peer daemons on loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from peer.config import PeerConfig
from peer.daemon import PeerDaemon
from registry_proxy.upstream import UpstreamConfig
from scheduler.core import SchedulerSettings
from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig
from tests.support.registry import RegistryProcess

TOKEN = "swarm-test-token"


@contextlib.asynccontextmanager
async def swarm_scheduler(settings: SchedulerSettings) -> AsyncIterator[TestServer]:
    """The swarm's scheduler app (the cluster token, rng seed 1) with ``settings``."""
    config = SchedulerConfig(token=TOKEN, rng_seed=1, scheduling=settings)
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def scheduler_server() -> AsyncIterator[TestServer]:
    async with swarm_scheduler(SchedulerSettings()) as server:
        yield server


SwarmFactory = Callable[..., Awaitable[PeerDaemon]]


@pytest.fixture
async def start_swarm_peer(
    tmp_path: Path, scheduler_server: TestServer
) -> AsyncIterator[SwarmFactory]:
    daemons: list[PeerDaemon] = []

    async def start(
        name: str, registry_host: str, endpoint: str, seed: bool = False, **settings: Any
    ) -> PeerDaemon:
        upstream = UpstreamConfig(
            default_registry=registry_host,
            insecure_registries=(registry_host,),
            endpoints={registry_host: endpoint},
        )
        defaults = {
            "piece_listen": "127.0.0.1:0",
            "scheduler": str(scheduler_server.make_url("/")).rstrip("/"),
        }
        config = PeerConfig(
            listen="127.0.0.1:0",
            data_dir=str(tmp_path / name),
            host_id=name,
            seed=seed,
            token=TOKEN,
            upstream=upstream,
            **{**defaults, **settings},
        )
        daemon = PeerDaemon(config)
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.stop()


async def post_to_scheduler(server: TestServer, path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` to the scheduler's API with the cluster token; the JSON answer."""
    async with (
        aiohttp.ClientSession(
            base_url=server.make_url("/"), headers={"Authorization": f"Bearer {TOKEN}"}
        ) as session,
        session.post(path, json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def register_idle_peer(
    server: TestServer, name: str, rack: str, digest: str, size_bytes: int, piece_bytes: int
) -> str:
    """Register, through the scheduler's API, a peer of ``rack`` for the blob that never
    fetches or serves a piece (nothing listens on its piece port); returns its peer id."""
    host = {
        "host_id": name,
        "address": "127.0.0.1",
        "piece_port": 9,
        "upload_capacity_bps": 1e8,
        "download_capacity_bps": 1e8,
        "upload_slots": 4,
        "idc": "dc1",
        "rack": rack,
    }
    peer_id = f"{name}-peer"
    peer = {
        "peer_id": peer_id,
        "task_id": digest,
        "host_id": name,
        "size_bytes": size_bytes,
        "piece_bytes": piece_bytes,
    }
    await post_to_scheduler(server, "/api/v1/hosts", host)
    await post_to_scheduler(server, "/api/v1/peers", peer)
    return peer_id


async def start_rack_peer(
    start_swarm_peer: SwarmFactory,
    registry: RegistryProcess,
    name: str,
    rack: str,
    piece_bytes: int,
    **settings: Any,
) -> PeerDaemon:
    """A swarm peer in idc dc1 and ``rack`` that cuts blobs into ``piece_bytes`` pieces."""
    return await start_swarm_peer(
        name,
        registry.host,
        registry.url,
        idc="dc1",
        rack=rack,
        min_piece_bytes=piece_bytes,
        **settings,
    )
