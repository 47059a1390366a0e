"""Graceful shutdown is bounded: an upload that outlasts the grace period is cut off.

The real-process test of a peer leaving mid-swarm (uploads finish, every pull succeeds,
exit status 0) is ``tests/e2e/test_shutdown.py``; this one needs a short grace period,
so it runs the daemon in-process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from peer.config import PeerConfig
from peer.daemon import HANDLER_SHUTDOWN_TIMEOUT_S, PeerDaemon
from peer.pieces import MiB
from registry_proxy.upstream import UpstreamConfig
from tests.integration.swarm.conftest import TOKEN
from tests.support.counting_proxy import CountingProxy
from tests.support.images import push_image_async
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(60)
GRACE_S = 0.5


async def test_an_upload_outlasting_the_grace_period_is_cut_off_and_stop_returns(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    scheduler_server: TestServer,
    tmp_path: Path,
) -> None:
    image = await push_image_async(
        registry.url, "swarm/app", "v1", [2 * MiB], seed=5, work_dir=tmp_path / "image"
    )
    layer = image.layers[0][0]
    config = PeerConfig(
        listen="127.0.0.1:0",
        piece_listen="127.0.0.1:0",
        data_dir=str(tmp_path / "seed"),
        host_id="seed",
        seed=True,
        token=TOKEN,
        scheduler=str(scheduler_server.make_url("/")).rstrip("/"),
        # A 1 MiB piece takes 8 s at this rate: far longer than the grace period.
        upload_rate_bps=128 * 1024,
        upstream=UpstreamConfig(
            default_registry=registry.host,
            insecure_registries=(registry.host,),
            endpoints={registry.host: counting_proxy.url},
        ),
    )
    seed = PeerDaemon(config, shutdown_grace_s=GRACE_S)
    await seed.start()
    stopping: asyncio.Task[None] | None = None
    try:
        blob = str(seed.make_url(f"/v2/{image.repo}/blobs/{layer}?ns={image.registry_host}"))
        pieces = f"http://127.0.0.1:{seed.piece_port}/api/v1/tasks/{layer}/pieces"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(blob) as resp:
                assert "sha256:" + hashlib.sha256(await resp.read()).hexdigest() == layer
            async with session.get(f"{pieces}/0") as slow:
                assert slow.status == 200  # the upload is under way
                stopping = asyncio.create_task(seed.stop())
                started = time.monotonic()
                await asyncio.sleep(0)  # let stop() close the door
                async with session.get(f"{pieces}/1") as refused:
                    assert refused.status == 503
                    assert await refused.json() == {"error": "this peer is shutting down"}
                with pytest.raises(aiohttp.ClientPayloadError):
                    await slow.read()
            await stopping
            took_s = time.monotonic() - started
    finally:
        if stopping is None:
            await seed.stop()
    assert GRACE_S <= took_s < GRACE_S + HANDLER_SHUTDOWN_TIMEOUT_S + 2, took_s
    assert seed.limiter.active == 0
