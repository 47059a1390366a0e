"""The seed and the first peer of each rack split the origin fetch (origin shares, on
here; ``scheduling.origin_sharers_per_rack`` is off by default).

Real peer daemons and scheduler on loopback, labelled with racks, behind a counting
proxy that paces the registry so that the pulls overlap: each taker asks the scheduler
for a few pieces at a time (``scheduler.core.origin_shares``), fetches them from the
registry, and gets the rest from the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from peer.daemon import PeerDaemon
from peer.pieces import MiB
from scheduler.core import SchedulerSettings
from tests.integration.swarm.conftest import SwarmFactory, swarm_scheduler
from tests.integration.swarm.test_swarm_pull import _pull_all, _wait_idle
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image_async
from tests.support.polling import until
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(120)

PIECE_BYTES = 256 * 1024
# Per registry response: one take (4 pieces, 1 MiB) takes half a second, and the layer
# four seconds for a taker alone, so the takers' pulls overlap however the event loop
# (or a loaded machine) orders their starts.
REGISTRY_RATE_BPS = 2 * MiB


@pytest.fixture
async def scheduler_server() -> AsyncIterator[TestServer]:
    """The swarm's scheduler (``start_swarm_peer`` points peers at it), origin shares on."""
    async with swarm_scheduler(SchedulerSettings(origin_sharers_per_rack=1)) as server:
        yield server


@pytest.fixture
async def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return await push_image_async(
        registry.url, "racks/shares", "v1", [8 * MiB], seed=13, work_dir=tmp_path / "image"
    )


async def _takers(
    start_swarm_peer: SwarmFactory,
    registry: RegistryProcess,
    proxy: CountingProxy,
    proxy_of_a: CountingProxy | None = None,
) -> tuple[PeerDaemon, PeerDaemon, PeerDaemon]:
    """A seed in its own rack, "a" in r1 and "b" in r2: each the first of its rack. "a"
    reaches the registry through ``proxy_of_a`` if given."""

    async def start(name: str, rack: str, via: CountingProxy, seed: bool = False) -> PeerDaemon:
        return await start_swarm_peer(
            name,
            registry.host,
            via.url,
            seed=seed,
            idc="dc1",
            rack=rack,
            min_piece_bytes=PIECE_BYTES,
        )

    return (
        await start("seed", "rs", proxy, seed=True),
        await start("a", "r1", proxy_of_a or proxy),
        await start("b", "r2", proxy),
    )


def _bytes(peer: PeerDaemon, source: str) -> float:
    return float(peer.metrics.download_bytes.labels(source)._value.get())


async def test_the_registry_sends_each_piece_once_to_the_seed_and_one_peer_per_rack(
    image: PushedImage,
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
) -> None:
    counting_proxy.rate_bps = REGISTRY_RATE_BPS
    takers = await _takers(start_swarm_peer, registry, counting_proxy)
    results = await asyncio.gather(*(_pull_all(peer, image) for peer in takers))
    assert results == [{d: d for d in image.blob_digests}] * 3
    await _wait_idle(list(takers))
    assert counting_proxy.total_blob_bytes == image.total_blob_bytes
    for peer in takers:
        # Its share from the registry, the others' from the swarm.
        assert _bytes(peer, "origin") > 0, peer.config.host_id
        assert _bytes(peer, "origin") < image.total_blob_bytes, peer.config.host_id
    assert sum(_bytes(peer, "origin") for peer in takers) == image.total_blob_bytes


async def test_the_pieces_of_a_taker_that_leaves_are_fetched_by_the_others(
    image: PushedImage,
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
    scheduler_server: TestServer,
) -> None:
    counting_proxy.rate_bps = REGISTRY_RATE_BPS
    # a's registry crawls: its first take (4 pieces, 1 MiB) takes 8 s, so it is still
    # fetching its share, and holds pieces nobody else fetches, when it stops.
    with CountingProxy(registry.url) as slow:
        slow.rate_bps = 128 * 1024
        seed, a, b = await _takers(start_swarm_peer, registry, counting_proxy, slow)
        pulls = [asyncio.create_task(_pull_all(peer, image)) for peer in (seed, b, a)]

        def into_its_layer_share() -> bool:
            # Past the config blob (one piece, which any taker may have fetched).
            return _bytes(a, "origin") > image.config_size

        try:
            await until(into_its_layer_share, 20, "a's first layer bytes from the registry")
            await a.stop()  # leaves the scheduler with its share half fetched
            got = await asyncio.gather(*pulls, return_exceptions=True)
        finally:
            for pull in pulls:
                pull.cancel()
            await asyncio.gather(*pulls, return_exceptions=True)
        assert got[:2] == [{d: d for d in image.blob_digests}] * 2
        assert isinstance(got[2], BaseException), got[2]  # a's client lost its pull
        registry_bytes = counting_proxy.total_blob_bytes + slow.total_blob_bytes
    # a's unfinished pieces were taken again: nothing is missing, little fetched twice,
    # and nobody had to give up on the swarm to get them.
    assert registry_bytes < 1.5 * image.total_blob_bytes, registry_bytes
    async with (
        aiohttp.ClientSession() as session,
        session.get(scheduler_server.make_url("/metrics")) as resp,
    ):
        text = await resp.text()
    for reason in ("gave_up_waiting", "swarm_cannot_serve"):
        line = f'p2p_scheduler_back_to_source_decisions_total{{reason="{reason}"}} 0.0'
        assert line in text, reason
