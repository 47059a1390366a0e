"""Failures in a swarm: a dead scheduler, a parent that goes away, a parent that lies."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from peer.daemon import PeerDaemon
from peer.pieces import MiB
from tests.integration.swarm.conftest import SwarmFactory
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image_async
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.registry import RegistryProcess
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.timeout(120)


async def _image(registry: RegistryProcess, tmp_path: Path, sizes: list[int]) -> PushedImage:
    return await push_image_async(
        registry.url, "swarm/app", "v1", sizes, seed=11, work_dir=tmp_path / "image"
    )


async def _get(peer: PeerDaemon, image: PushedImage, digest: str) -> str:
    url = str(peer.make_url(f"/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"))
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return "sha256:" + hashlib.sha256(await resp.read()).hexdigest()


def _count(peer: PeerDaemon, metric: str, label: str) -> float:
    return float(getattr(peer.metrics, metric).labels(label)._value.get())


async def test_unreachable_scheduler_sends_peers_to_the_registry(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
    tmp_path: Path,
) -> None:
    image = await _image(registry, tmp_path, [6 * MiB])
    layer = image.layers[0][0]
    dead = f"http://127.0.0.1:{free_port()}"
    peer = await start_swarm_peer("lonely", registry.host, counting_proxy.url, scheduler=dead)
    assert await _get(peer, image, layer) == layer
    assert peer.metrics.scheduler_unavailable._value.get() >= 1


async def test_parent_leaving_mid_transfer_does_not_fail_its_children(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
    tmp_path: Path,
) -> None:
    image = await _image(registry, tmp_path, [16 * MiB])
    layer = image.layers[0][0]
    # A slow seed: its uploads crawl, so it is still serving when it goes away.
    seed = await start_swarm_peer(
        "seed", registry.host, counting_proxy.url, seed=True, upload_rate_bps=4 * MiB
    )
    assert await _get(seed, image, layer) == layer
    child = await start_swarm_peer("child", registry.host, counting_proxy.url)
    pull = asyncio.create_task(_get(child, image, layer))
    await asyncio.to_thread(
        wait_until, lambda: _count(child, "download_bytes", "seed") >= 4 * MiB, 30, "4 MiB"
    )
    await seed.stop()  # the parent leaves with the child's transfers in flight
    assert await pull == layer


class CorruptingPieceProxy:
    """Sits in front of a peer's piece server and flips a byte of every piece it sends."""

    def __init__(self, target_port: int) -> None:
        self.target = f"http://127.0.0.1:{target_port}"
        self.corrupted = 0
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self.server = ThreadedServer(app, name="corrupting-proxy")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                self.target + request.raw_path,
                headers={"Authorization": request.headers.get("Authorization", "")},
            ) as upstream,
        ):
            body = await upstream.read()
            if "/pieces/" in request.path and upstream.status == 200 and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.corrupted += 1
            headers = {k: v for k, v in upstream.headers.items() if k.lower().startswith("x-")}
            return web.Response(
                status=upstream.status,
                body=body,
                headers=headers,
                content_type=upstream.content_type,
            )


async def test_corrupt_parent_is_detected_blocked_and_never_reaches_a_client(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
    tmp_path: Path,
) -> None:
    image = await _image(registry, tmp_path, [12 * MiB])
    layer = image.layers[0][0]
    seed = await start_swarm_peer("seed", registry.host, counting_proxy.url, seed=True)
    assert await _get(seed, image, layer) == layer
    # The liar holds the blob honestly, but everything it uploads is altered on the way.
    liar_port = free_port()
    proxy = CorruptingPieceProxy(liar_port)
    proxy.server.start()
    try:
        liar = await start_swarm_peer(
            "liar",
            registry.host,
            counting_proxy.url,
            piece_listen=f"127.0.0.1:{liar_port}",
            advertise_port=proxy.server.port,
        )
        assert await _get(liar, image, layer) == layer
        await seed.stop()  # now the liar is the only peer holding the blob
        victim = await start_swarm_peer("victim", registry.host, counting_proxy.url)
        assert await _get(victim, image, layer) == layer
    finally:
        proxy.server.stop()
    assert proxy.corrupted >= 1
    assert _count(victim, "parent_failures", "corrupt") >= 1
