"""A rack peer claims pieces at the scheduler before it fetches them from another rack.

Real peer daemons and scheduler on loopback, labelled with racks; a rack-mate that
never fetches anything holds claims on every piece, registered through the scheduler's
API. The child must leave those pieces alone until the claims lapse, then still get
them all from the other rack.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from peer.daemon import PeerDaemon
from peer.pieces import MiB
from scheduler.core import SchedulerSettings
from tests.integration.swarm.conftest import (
    SwarmFactory,
    post_to_scheduler,
    register_idle_peer,
    start_rack_peer,
    swarm_scheduler,
)
from tests.integration.swarm.test_swarm_pull import _pull_all, _wait_idle
from tests.support.images import PushedImage, push_image_async
from tests.support.polling import until
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(120)

PIECE_BYTES = 256 * 1024
LEASE_S = 3.0


@pytest.fixture
async def scheduler_server() -> AsyncIterator[TestServer]:
    """The swarm's scheduler (``start_swarm_peer`` points peers at it): claims lapse
    after ``LEASE_S``, stripes off so that only claims hold the child back; a throttled
    parent is never flagged slow (its first pieces come in a burst)."""
    settings = SchedulerSettings(
        rack_claim_lease_s=LEASE_S, rack_stripes=0, slow_cost_factor=1e6, slow_cost_min_ratio=1e6
    )
    async with swarm_scheduler(settings) as server:
        yield server


@pytest.fixture
async def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return await push_image_async(
        registry.url, "racks/claims", "v1", [8 * MiB], seed=5, work_dir=tmp_path / "image"
    )


async def _start(
    start_swarm_peer: SwarmFactory,
    registry: RegistryProcess,
    name: str,
    rack: str,
    **settings: Any,
) -> PeerDaemon:
    return await start_rack_peer(start_swarm_peer, registry, name, rack, PIECE_BYTES, **settings)


async def _claim_everything_for_a_rack_mate(server: TestServer, image: PushedImage) -> None:
    ((digest, size),) = image.layers
    pieces = list(range(size // PIECE_BYTES))
    peer_id = await register_idle_peer(server, "busy", "r1", digest, size, PIECE_BYTES)
    answer = await post_to_scheduler(server, f"/api/v1/peers/{peer_id}/claims", {"claim": pieces})
    assert answer == {"granted": pieces, "claimed": [], "holders": []}


async def test_pieces_a_rack_mate_claimed_are_left_to_it_until_the_claims_lapse(
    image: PushedImage,
    registry: RegistryProcess,
    start_swarm_peer: SwarmFactory,
    scheduler_server: TestServer,
) -> None:
    far = await _start(start_swarm_peer, registry, "far", "r2")
    assert await _pull_all(far, image) == {d: d for d in image.blob_digests}
    await _wait_idle([far])
    await _claim_everything_for_a_rack_mate(scheduler_server, image)
    claimed_at = time.monotonic()

    child = await _start(start_swarm_peer, registry, "child", "r1")
    assert await _pull_all(child, image) == {d: d for d in image.blob_digests}
    # Without claims the layer crosses loopback in well under a second; with them the
    # child waits for the rack-mate's claims to lapse. Load only makes it later.
    assert time.monotonic() - claimed_at >= LEASE_S
    claims = child.metrics.import_claims
    assert claims.labels("denied")._value.get() > 0
    ((_, size),) = image.layers
    assert claims.labels("granted")._value.get() >= size // PIECE_BYTES
    assert claims.labels("unchecked")._value.get() == 0
    assert child.metrics.other_rack_bytes._value.get() == image.total_blob_bytes


async def test_a_dead_rack_mate_named_as_holder_does_not_stall_the_pull(
    image: PushedImage,
    registry: RegistryProcess,
    start_swarm_peer: SwarmFactory,
    scheduler_server: TestServer,
) -> None:
    """Midway through the child's pull, a rack-mate that claims to hold every piece but
    serves none registers. The scheduler names it as the holder of the pieces the child
    claims from the other rack (``scheduler.core.rack_holders``), and a top-up decision
    may pick it too; either way the child finds it unreachable, blocks it, and still
    gets everything from the other rack, none from the registry."""
    ((digest, size),) = image.layers
    # Slow enough (8 MiB in about 4 s) that the child is mid-pull when the rack-mate comes.
    far = await _start(start_swarm_peer, registry, "far", "r2", upload_rate_bps=2 * MiB)
    assert await _pull_all(far, image) == {d: d for d in image.blob_digests}
    await _wait_idle([far])
    child = await _start(start_swarm_peer, registry, "child", "r1")
    pull = asyncio.create_task(_pull_all(child, image))
    await until(
        lambda: child.metrics.other_rack_bytes._value.get() > 0, 10, "the child's first pieces"
    )
    assert not pull.done()
    peer_id = await register_idle_peer(scheduler_server, "dead", "r1", digest, size, PIECE_BYTES)
    pieces = list(range(size // PIECE_BYTES))
    body = {
        "peer_id": peer_id,
        "task_id": digest,
        "host_id": "dead",
        "size_bytes": size,
        "piece_bytes": PIECE_BYTES,
        "pieces": pieces,
    }
    await post_to_scheduler(scheduler_server, "/api/v1/peers", body)  # now it holds them all
    assert await pull == {d: d for d in image.blob_digests}
    assert child.metrics.parent_failures.labels("unreachable")._value.get() >= 1
    assert child.metrics.download_bytes.labels("origin")._value.get() == 0
    assert child.metrics.other_rack_bytes._value.get() == image.total_blob_bytes
    async with (
        aiohttp.ClientSession() as session,
        session.get(scheduler_server.make_url("/metrics")) as resp,
    ):
        text = await resp.text()
    in_rack = re.search(r'import_claims_total\{outcome="in_rack"\} (\S+)', text)
    assert in_rack is not None and float(in_rack.group(1)) > 0


async def test_nothing_crosses_the_uplink_that_a_rack_mate_holds(
    image: PushedImage,
    registry: RegistryProcess,
    start_swarm_peer: SwarmFactory,
    scheduler_server: TestServer,
) -> None:
    """ "mate" (r1) holds the blob when "child" (r1) pulls: every claim the child makes on
    a piece from "far" (r2) finds mate holding it, so the child gets everything inside
    its rack (``scheduler.core.rack_holders``)."""
    for name, rack in (("far", "r2"), ("mate", "r1")):
        peer = await _start(start_swarm_peer, registry, name, rack)
        assert await _pull_all(peer, image) == {d: d for d in image.blob_digests}
        await _wait_idle([peer])
    child = await _start(start_swarm_peer, registry, "child", "r1")
    assert await _pull_all(child, image) == {d: d for d in image.blob_digests}
    assert child.metrics.other_rack_bytes._value.get() in (0, image.config_size)
    assert child.metrics.download_bytes.labels("peer")._value.get() == image.total_blob_bytes
