"""A swarm of real processes: registry, p2p-scheduler, a seed and several p2p-peers."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess, SchedulerProcess, metric_value
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _settings(
    registry: RegistryProcess, proxy: CountingProxy, scheduler: Any, **extra: Any
) -> dict[str, Any]:
    return {
        "scheduler": scheduler.url,
        "token": scheduler.token,
        "upstream": {
            "default_registry": registry.host,
            "insecure_registries": [registry.host],
            "endpoints": {registry.host: proxy.url},
        },
        **extra,
    }


def _pull(peer: PeerProcess, image: PushedImage) -> dict[str, str]:
    got = {}
    for digest in image.blob_digests:
        url = f"{peer.url}/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"
        sha = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=120) as resp:
            while chunk := resp.read(1 << 20):
                sha.update(chunk)
        got[digest] = "sha256:" + sha.hexdigest()
    return got


def _pull_all_at_once(peers: list[PeerProcess], image: PushedImage) -> None:
    with ThreadPoolExecutor(len(peers)) as pool:
        for got in pool.map(lambda p: _pull(p, image), peers):
            assert got == {d: d for d in image.blob_digests}


def _bytes_by_source(peer: PeerProcess) -> dict[str, float]:
    text = peer.metrics()
    return {
        source: metric_value(text, "p2p_peer_download_bytes_total", f'source="{source}"')
        for source in ("origin", "peer", "seed")
    }


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


@dataclass
class Swarm:
    """A running scheduler, and a way to start peers that use it and the counted registry."""

    scheduler: SchedulerProcess
    join: Callable[..., PeerProcess]  # join(name, **settings): host_id is the name


@pytest.fixture
def swarm(
    registry: RegistryProcess, counting_proxy: CountingProxy, start_scheduler: Any, start_peer: Any
) -> Swarm:
    scheduler = start_scheduler()

    def join(name: str, **extra: Any) -> PeerProcess:
        settings = _settings(registry, counting_proxy, scheduler, host_id=name, **extra)
        peer: PeerProcess = start_peer(name, **settings)
        return peer

    return Swarm(scheduler, join)


def test_seed_and_eight_peers_pull_at_once_mostly_from_each_other(
    counting_proxy: CountingProxy, image: PushedImage, swarm: Swarm
) -> None:
    scheduler = swarm.scheduler
    seed = swarm.join("seed", seed=True)
    peers = [swarm.join(f"peer{i}") for i in range(8)]
    _pull_all_at_once([seed, *peers], image)

    registry_bytes = counting_proxy.total_blob_bytes
    assert registry_bytes <= 1.1 * image.total_blob_bytes, registry_bytes
    sources = [_bytes_by_source(p) for p in peers]
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
    _pull_all_at_once(children, image)
    killer.join()
    assert not seed.alive()


def _slow_seed_holding(image: PushedImage, swarm: Swarm) -> PeerProcess:
    """A seed that holds the image and uploads at 2 MiB/s, so transfers from it last."""
    seed = swarm.join("seed", seed=True, upload_rate_bps=2 * MiB)
    assert _pull(seed, image)
    return seed


def _kill_when_uploading(seed: PeerProcess, children: list[PeerProcess]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(_bytes_by_source(c)["seed"] for c in children) >= 1:
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
        assert _pull(child, image) == {d: d for d in image.blob_digests}
    finally:
        killer.cancel()
    # The scheduler died mid-pull: what the seed had not sent yet came from the registry.
    assert _bytes_by_source(child)["origin"] > 0


def test_peers_re_register_what_they_hold_when_the_scheduler_comes_back(
    counting_proxy: CountingProxy, image: PushedImage, swarm: Swarm
) -> None:
    scheduler = swarm.scheduler
    holder = swarm.join("holder")
    assert _pull(holder, image)
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
    assert _pull(newcomer, image) == {d: d for d in image.blob_digests}
    assert counting_proxy.total_blob_bytes == served  # nothing more from the registry
    assert _bytes_by_source(newcomer)["peer"] == image.total_blob_bytes
