"""Several peers pull the same blobs at once: the registry serves each about once."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest

from peer.daemon import PeerDaemon
from peer.pieces import MiB
from tests.integration.swarm.conftest import SwarmFactory
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image_async
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(120)


async def _pull_all(peer: PeerDaemon, image: PushedImage) -> dict[str, str]:
    """GET every blob through the peer's mirror; returns digest -> sha256 of the body."""
    got = {}
    async with aiohttp.ClientSession() as session:
        for digest in image.blob_digests:
            url = str(peer.make_url(f"/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"))
            async with session.get(url) as resp:
                assert resp.status == 200, await resp.text()
                got[digest] = "sha256:" + hashlib.sha256(await resp.read()).hexdigest()
    return got


def _sample(peer: PeerDaemon, source: str) -> float:
    return peer.metrics.download_bytes.labels(source)._value.get()


async def _wait_idle(peers: list[PeerDaemon]) -> None:
    # Finishing reports go out after the client got its last byte.
    await asyncio.to_thread(
        wait_until, lambda: all(p.engine.active_tasks == 0 for p in peers), 10, "tasks to end"
    )


async def test_swarm_pull_serves_each_blob_about_once_from_the_registry(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
    tmp_path: Path,
) -> None:
    image = await push_image_async(
        registry.url,
        "swarm/app",
        "v1",
        [24 * MiB, 8 * MiB, 1 * MiB],
        seed=9,
        work_dir=tmp_path / "image",
    )
    seed = await start_swarm_peer("seed", registry.host, counting_proxy.url, seed=True)
    peers = [
        await start_swarm_peer(f"peer{i}", registry.host, counting_proxy.url) for i in range(5)
    ]
    await asyncio.to_thread(wait_until, lambda: True, 0.1, "nothing")
    results = await asyncio.gather(*(_pull_all(p, image) for p in [seed, *peers]))
    for got in results:
        assert got == {d: d for d in image.blob_digests}
    await _wait_idle([seed, *peers])

    registry_bytes = counting_proxy.total_blob_bytes
    assert registry_bytes <= 1.1 * image.total_blob_bytes, registry_bytes
    from_peers = sum(_sample(p, "peer") + _sample(p, "seed") for p in peers)
    from_origin = sum(_sample(p, "origin") for p in peers)
    assert from_peers >= 0.8 * (from_peers + from_origin), (from_peers, from_origin)
    # Children followed downloading parents' piece lists over streams, and never fell
    # back to long polls (only a seed's list or a complete one is answered at once).
    lists = {
        form: sum(p.metrics.piece_lists.labels(form)._value.get() for p in [seed, *peers])
        for form in ("stream", "long_poll", "at_once")
    }
    assert lists["stream"] > 0 and lists["long_poll"] == 0, lists
    print(
        f"registry {registry_bytes}, image {image.total_blob_bytes}, "
        f"peers got {from_peers:.0f} from peers and {from_origin:.0f} from the origin, "
        f"piece lists {lists}"
    )
