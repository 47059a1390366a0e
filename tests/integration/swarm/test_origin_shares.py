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
# Per registry response: one take (4 pieces, 1 MiB) takes a quarter of a second, so the
# takers' pulls overlap however the event loop orders their starts.
REGISTRY_RATE_BPS = 4 * MiB


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
    start_swarm_peer: SwarmFactory, registry: RegistryProcess, proxy: CountingProxy
) -> tuple[PeerDaemon, PeerDaemon, PeerDaemon]:
    """A seed in its own rack, "a" in r1 and "b" in r2: each the first of its rack."""

    async def start(name: str, rack: str, seed: bool = False) -> PeerDaemon:
        return await start_swarm_peer(
            name,
            registry.host,
            proxy.url,
            seed=seed,
            idc="dc1",
            rack=rack,
            min_piece_bytes=PIECE_BYTES,
        )

    return await start("seed", "rs", seed=True), await start("a", "r1"), await start("b", "r2")


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
    seed, a, b = await _takers(start_swarm_peer, registry, counting_proxy)
    pulls = [asyncio.create_task(_pull_all(peer, image)) for peer in (seed, b)]
    doomed = asyncio.create_task(_pull_all(a, image))
    await until(lambda: _bytes(a, "origin") > 0, 20, "a's first pieces from the registry")
    await a.stop()  # leaves the scheduler with its share half fetched
    with pytest.raises(Exception):  # noqa: B017 (its client's pull breaks off, any way)
        await doomed
    assert await asyncio.gather(*pulls) == [{d: d for d in image.blob_digests}] * 2
    # a's unfinished pieces were taken again: nothing is missing, little fetched twice,
    # and nobody had to give up on the swarm to get them.
    assert counting_proxy.total_blob_bytes < 1.5 * image.total_blob_bytes
    async with (
        aiohttp.ClientSession() as session,
        session.get(scheduler_server.make_url("/metrics")) as resp,
    ):
        text = await resp.text()
    for reason in ("gave_up_waiting", "swarm_cannot_serve"):
        line = f'p2p_scheduler_back_to_source_decisions_total{{reason="{reason}"}} 0.0'
        assert line in text, reason
