"""A swarm of real processes: registry, p2p-scheduler, a seed and several p2p-peers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess, metric_value
from tests.e2e.swarm_helpers import Swarm, assert_pulls, bytes_by_source, pull
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url,
        "swarm/app",
        "v1",
        [16 * MiB, 4 * MiB, 1 * MiB],
        seed=21,
        work_dir=tmp_path / "image",
    )


def test_seed_and_eight_peers_pull_at_once_mostly_from_each_other(
    counting_proxy: CountingProxy, image: PushedImage, swarm: Swarm
) -> None:
    scheduler = swarm.scheduler
    seed = swarm.join("seed", seed=True)
    peers = [swarm.join(f"peer{i}") for i in range(8)]
    assert_pulls([seed, *peers], image)

    registry_bytes = counting_proxy.total_blob_bytes
    assert registry_bytes <= 1.1 * image.total_blob_bytes, registry_bytes
    sources = [bytes_by_source(p) for p in peers]
    from_swarm = sum(s["peer"] + s["seed"] for s in sources)
    from_origin = sum(s["origin"] for s in sources)
    assert from_swarm >= 0.8 * (from_swarm + from_origin), (from_swarm, from_origin)
    assert (
        metric_value(scheduler.metrics(), "p2p_scheduler_decisions_total", 'action="parents"') >= 8
    )


def test_parent_killed_mid_transfer_its_children_finish(image: PushedImage, swarm: Swarm) -> None:
    # A seed whose uploads crawl, so it dies with transfers in flight.
    seed = _slow_seed_holding(image, swarm)
    children = [swarm.join(f"child{i}") for i in range(2)]
    killer = threading.Thread(target=_kill_when_uploading, args=(seed, children), daemon=True)
    killer.start()
    assert_pulls(children, image)
    killer.join()
    assert not seed.alive()


def _slow_seed_holding(image: PushedImage, swarm: Swarm) -> PeerProcess:
    """A seed that holds the image and uploads at 2 MiB/s, so transfers from it last."""
    seed = swarm.join("seed", seed=True, upload_rate_bps=2 * MiB)
    assert pull(seed, image)
    return seed


def _kill_when_uploading(seed: PeerProcess, children: list[PeerProcess]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(bytes_by_source(c)["seed"] for c in children) >= 1:
            seed.kill()  # SIGKILL: no goodbye to the scheduler
            return
        time.sleep(0.05)


def test_scheduler_killed_during_a_pull_peers_fall_back_to_the_registry(
    image: PushedImage, swarm: Swarm
) -> None:
    _slow_seed_holding(image, swarm)
    child = swarm.join("child")
    killer = threading.Timer(1.0, swarm.scheduler.kill)
    killer.start()
    try:
        assert pull(child, image) == {d: d for d in image.blob_digests}
    finally:
        killer.cancel()
    # The scheduler died mid-pull: what the seed had not sent yet came from the registry.
    assert bytes_by_source(child)["origin"] > 0


def test_peers_re_register_what_they_hold_when_the_scheduler_comes_back(
    counting_proxy: CountingProxy, image: PushedImage, swarm: Swarm
) -> None:
    scheduler = swarm.scheduler
    holder = swarm.join("holder")
    assert pull(holder, image)
    served = counting_proxy.total_blob_bytes
    scheduler.kill()
    scheduler.start()  # a new, empty scheduler on the same address
    # The holder's announce loop notices and registers its cached blobs again.
    wait_until(
        lambda: (
            metric_value(
                scheduler.metrics(), "p2p_scheduler_events_total", 'type="peer_registered"'
            )
            >= len(image.blob_digests)
        ),
        30,
        "the holder to re-register its blobs",
    )
    newcomer = swarm.join("newcomer")
    assert pull(newcomer, image) == {d: d for d in image.blob_digests}
    assert counting_proxy.total_blob_bytes == served  # nothing more from the registry
    assert bytes_by_source(newcomer)["peer"] == image.total_blob_bytes
