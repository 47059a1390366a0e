"""A swarm in one process: the real scheduler app and real peer daemons on loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from peer.config import PeerConfig
from peer.daemon import PeerDaemon
from registry_proxy.upstream import UpstreamConfig
from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig

TOKEN = "swarm-test-token"


@pytest.fixture
async def scheduler_server() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(SchedulerConfig(token=TOKEN, rng_seed=1)), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


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
