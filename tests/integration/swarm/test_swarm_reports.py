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

from peer import conductor
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
    # Hold the child's fetches between "piece recorded" and "piece reported" until its
    # conductor's loop has seen the blob complete: the moment reports used to be lost.
    child_dir = str(tmp_path / "child")
    seen_complete: dict[str, asyncio.Event] = {}
    notify, missing_pieces = BlobTask.wake, BlobTask.missing_pieces

    def watched_missing_pieces(self: BlobTask) -> list[int]:
        missing = missing_pieces(self)
        if not missing:
            seen_complete.setdefault(self.digest, asyncio.Event()).set()
        return missing

    async def held_notify(self: BlobTask) -> None:
        await notify(self)
        if str(self.store.root).startswith(child_dir):
            await seen_complete.setdefault(self.digest, asyncio.Event()).wait()

    monkeypatch.setattr(BlobTask, "missing_pieces", watched_missing_pieces)
    monkeypatch.setattr(BlobTask, "wake", held_notify)
    # Every piece is held, so all four must be in flight at once from the one parent.
    monkeypatch.setattr(conductor, "MAX_PER_PARENT", 4)

    try:
        for peer in (seed, child):
            assert await _pull_all(peer, image) == {d: d for d in image.blob_digests}
        await _wait_idle([seed, child])
    finally:  # a failed pull must not leave fetches held through the peers' shutdown
        for event in seen_complete.values():
            event.set()

    url = scheduler_server.make_url("/metrics")
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    by_source = {s: sample(text, "p2p_scheduler_piece_bytes_total", source=s) for s in SOURCES}
    assert by_source["origin"] == image.total_blob_bytes, by_source
    assert by_source["seed"] + by_source["peer"] == image.total_blob_bytes, by_source
