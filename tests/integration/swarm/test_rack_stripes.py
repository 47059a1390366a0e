"""A peer with a rack stripe asks a parent in another rack only for its share of pieces.

Real peer daemons and scheduler on loopback, labelled with racks. Which parent served
which piece is read back from the scheduler's transfer records.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from peer.config import PeerConfig
from peer.daemon import PeerDaemon
from peer.pieces import MiB
from scheduler.core import SchedulerSettings
from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig
from scheduler.service.records import RECORDS_FILE
from tests.integration.swarm.conftest import (
    TOKEN,
    SwarmFactory,
    register_idle_peer,
    start_rack_peer,
)
from tests.integration.swarm.test_swarm_pull import _pull_all, _wait_idle
from tests.support.images import PushedImage, push_image_async
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(120)

PIECE_BYTES = 256 * 1024


@pytest.fixture
async def scheduler_server(tmp_path: Path) -> AsyncIterator[TestServer]:
    """The swarm's scheduler (``start_swarm_peer`` points peers at it), keeping
    transfer records. Rack holders off: with them, a rack-mate holding every piece
    would serve the child all of them, leaving no stripe to test."""
    config = SchedulerConfig(
        token=TOKEN,
        rng_seed=1,
        records_dir=str(tmp_path / "records"),
        records_flush_s=0.1,
        scheduling=SchedulerSettings(rack_holders_per_claim=0),
    )
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def _records(directory: Path) -> list[dict[str, object]]:
    path = directory / RECORDS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


PeerFactory = Callable[[str, str], Awaitable[PeerDaemon]]


@pytest.fixture
async def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return await push_image_async(
        registry.url, "racks/app", "v1", [16 * MiB], seed=4, work_dir=tmp_path / "image"
    )


@pytest.fixture
def start_peer(registry: RegistryProcess, start_swarm_peer: SwarmFactory) -> PeerFactory:
    async def start(name: str, rack: str) -> PeerDaemon:
        return await start_rack_peer(start_swarm_peer, registry, name, rack, PIECE_BYTES)

    return start


async def _pull(peer: PeerDaemon, image: PushedImage) -> None:
    assert await _pull_all(peer, image) == {d: d for d in image.blob_digests}
    await _wait_idle([peer])


async def _served_by(records_dir: Path, image: PushedImage, child: str, parent: str) -> list[int]:
    """The layer's pieces ``child`` got from ``parent``, once it reported them all."""
    ((digest, size),) = image.layers

    def of_child() -> list[dict[str, object]]:
        return [
            r for r in _records(records_dir) if r["child_host"] == child and r["task_id"] == digest
        ]

    pieces = size // PIECE_BYTES
    await asyncio.to_thread(
        wait_until, lambda: len(of_child()) >= pieces, 10, "the child's transfer records"
    )
    return sorted(
        int(r["piece_index"])  # type: ignore[call-overload]
        for r in of_child()
        if r["parent_host"] == parent
    )


async def test_a_striped_peer_takes_only_its_share_from_another_rack(
    image: PushedImage, start_peer: PeerFactory, tmp_path: Path
) -> None:
    # "far" (rack r2) and then "mate" (r1) hold the blob; "child" (r1) comes last: the
    # second peer of r1 in the task, so its stripe is the odd pieces.
    for name, rack in (("far", "r2"), ("mate", "r1"), ("child", "r1")):
        peer = await start_peer(name, rack)
        await _pull(peer, image)
    got = await _served_by(tmp_path / "records", image, "child", "far")
    outside = [index for index in got if index % 2 == 0]
    # "mate" holds every piece, so the stripe leaves the child idle only before it has
    # read mate's piece list, if at all; each such time it may pick a batch from "far".
    fallbacks = peer.metrics.stripe_fallbacks._value.get()
    assert len(outside) <= fallbacks * PeerConfig.pieces_in_flight, (got, fallbacks)
    assert len(got) > len(outside), got  # "far" served its stripe
    crossed = peer.metrics.other_rack_bytes._value.get() - len(got) * PIECE_BYTES
    assert crossed in (0, image.config_size)  # and maybe the config blob


async def test_a_stripe_nobody_in_the_rack_can_fill_does_not_stall_the_peer(
    image: PushedImage, start_peer: PeerFactory, scheduler_server: TestServer, tmp_path: Path
) -> None:
    await _pull(await start_peer("far", "r2"), image)
    # A rack-mate registered first that never gets a piece: the child's stripe is the
    # odd pieces, and nobody in its rack will ever hold the even ones.
    ((digest, size),) = image.layers
    await register_idle_peer(scheduler_server, "idle", "r1", digest, size, PIECE_BYTES)
    child = await start_peer("child", "r1")
    await _pull(child, image)
    got = await _served_by(tmp_path / "records", image, "child", "far")
    assert got == list(range(size // PIECE_BYTES))
    assert child.metrics.other_rack_bytes._value.get() == image.total_blob_bytes
    assert child.metrics.stripe_fallbacks._value.get() > 0
