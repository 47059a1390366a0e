"""Every piece a peer receives is reported to the scheduler, even the last ones.

The scheduler's byte counters (``p2p_scheduler_piece_bytes_total``, ``p2pctl status``)
and its learning records come from these reports; a lost one makes "is P2P working?"
answer wrongly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from peer.pieces import MiB
from peer.task import BlobTask
from tests.integration.scheduler.test_scheduler_metrics import sample
from tests.integration.swarm.conftest import SwarmFactory
from tests.integration.swarm.test_swarm_pull import _pull_all, _wait_idle
from tests.support.counting_proxy import CountingProxy
from tests.support.images import push_image_async
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(120)

SOURCES = ("origin", "seed", "peer")


async def test_pieces_recorded_as_the_blob_completes_are_still_reported(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_swarm_peer: SwarmFactory,
    scheduler_server: TestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = await push_image_async(
        registry.url, "swarm/reports", "v1", [4 * MiB], seed=11, work_dir=tmp_path / "image"
    )
    seed = await start_swarm_peer("seed", registry.host, counting_proxy.url, seed=True)
    child = await start_swarm_peer("child", registry.host, counting_proxy.url)
    # Stretch the moment between "piece recorded" and "piece reported" past the
    # conductor's wake-up interval: its loop then sees the blob complete while the last
    # fetches are still finishing, which is when reports used to be lost.
    notify = BlobTask._notify

    async def slow_notify(self: BlobTask) -> None:
        await notify(self)
        await asyncio.sleep(0.6)

    monkeypatch.setattr(BlobTask, "_notify", slow_notify)

    for peer in (seed, child):
        assert await _pull_all(peer, image) == {d: d for d in image.blob_digests}
    await _wait_idle([seed, child])

    url = scheduler_server.make_url("/metrics")
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    by_source = {s: sample(text, "p2p_scheduler_piece_bytes_total", source=s) for s in SOURCES}
    assert by_source["origin"] == image.total_blob_bytes, by_source
    assert by_source["seed"] + by_source["peer"] == image.total_blob_bytes, by_source
