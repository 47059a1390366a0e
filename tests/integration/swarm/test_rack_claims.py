"""A rack peer claims pieces at the scheduler before it fetches them from another rack.

Real peer daemons and scheduler on loopback, labelled with racks; a rack-mate that
never fetches anything holds claims on every piece, registered through the scheduler's
API. The child must leave those pieces alone until the claims lapse, then still get
them all from the other rack.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from peer.daemon import PeerDaemon
from peer.pieces import MiB
from scheduler.core import SchedulerSettings
from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig
from tests.integration.swarm.conftest import (
    TOKEN,
    SwarmFactory,
    post_to_scheduler,
    register_idle_peer,
)
from tests.integration.swarm.test_swarm_pull import _pull_all, _wait_idle
from tests.support.images import PushedImage, push_image_async
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(120)

PIECE_BYTES = 256 * 1024
LEASE_S = 3.0


@pytest.fixture
async def scheduler_server() -> AsyncIterator[TestServer]:
    """The swarm's scheduler (``start_swarm_peer`` points peers at it): claims lapse
    after ``LEASE_S``, stripes off so that only claims hold the child back."""
    settings = SchedulerSettings(rack_claim_lease_s=LEASE_S, rack_stripes=0)
    config = SchedulerConfig(token=TOKEN, rng_seed=1, scheduling=settings)
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return await push_image_async(
        registry.url, "racks/claims", "v1", [8 * MiB], seed=5, work_dir=tmp_path / "image"
    )


async def _start(
    start_swarm_peer: SwarmFactory, registry: RegistryProcess, name: str, rack: str
) -> PeerDaemon:
    return await start_swarm_peer(
        name, registry.host, registry.url, idc="dc1", rack=rack, min_piece_bytes=PIECE_BYTES
    )


async def _claim_everything_for_a_rack_mate(server: TestServer, image: PushedImage) -> None:
    ((digest, size),) = image.layers
    pieces = list(range(size // PIECE_BYTES))
    peer_id = await register_idle_peer(server, "busy", "r1", digest, size, PIECE_BYTES)
    answer = await post_to_scheduler(server, f"/api/v1/peers/{peer_id}/claims", {"claim": pieces})
    assert answer == {"granted": pieces, "claimed": []}


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
