"""Two scheduler replicas on Redis, a seed and peers as real processes, and failures.

- One replica SIGKILLed mid-pull: its tasks move to the other, every pull succeeds with
  matching digests, and no peer ever found itself without a scheduler.
- Redis killed and started again (empty) mid-pull: the replicas keep scheduling from
  memory, keep listing each other, register again when Redis returns, and every pull
  succeeds.

The seed uploads at 2 MiB/s, so the pulls last long enough to be interrupted.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB
from peer.rendezvous import rank
from tests.e2e.conftest import PeerProcess, SchedulerProcess, metric_value
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.redis import RedisProcess
from tests.support.registry import RegistryProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

HEARTBEAT_S = 0.2
TTL_S = 1.0
CHILDREN = 3


def _get(scheduler: SchedulerProcess, path: str) -> Any:
    request = urllib.request.Request(
        scheduler.url + path, headers={"Authorization": f"Bearer {scheduler.token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def _listed(scheduler: SchedulerProcess) -> list[str]:
    return [r["url"] for r in _get(scheduler, "/api/v1/replicas")["replicas"]]


def _pull_blob(peer: PeerProcess, image: PushedImage, digest: str) -> str:
    url = f"{peer.url}/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"
    sha = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=120) as resp:
        while chunk := resp.read(1 << 20):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _pull(peer: PeerProcess, image: PushedImage) -> dict[str, str]:
    """Every blob of the image at once, as containerd pulls layers in parallel."""
    digests = image.blob_digests
    with ThreadPoolExecutor(len(digests)) as pool:
        results = pool.map(lambda d: _pull_blob(peer, image, d), digests)
        return dict(zip(digests, results, strict=True))


def _swarm_bytes(peers: list[PeerProcess]) -> float:
    total = 0.0
    for peer in peers:
        text = peer.metrics()
        for source in ("peer", "seed"):
            total += metric_value(text, "p2p_peer_download_bytes_total", f'source="{source}"')
    return total


@dataclass
class Cluster:
    replicas: list[SchedulerProcess]
    seed: PeerProcess
    children: list[PeerProcess]


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url,
        "replicas/app",
        "v1",
        [12 * MiB, 6 * MiB, 2 * MiB],
        seed=61,
        work_dir=tmp_path / "image",
    )


@pytest.fixture
def cluster(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    redis_server: RedisProcess,
    start_scheduler: Callable[..., SchedulerProcess],
    start_peer: Callable[..., PeerProcess],
    image: PushedImage,
) -> Cluster:
    replicas = [
        start_scheduler(
            redis_url=redis_server.url,
            replica_heartbeat_s=HEARTBEAT_S,
            replica_ttl_s=TTL_S,
        )
        for _ in range(2)
    ]
    urls = sorted(r.url for r in replicas)
    wait_until(
        lambda: all(_listed(r) == urls for r in replicas), 10, "the replicas to list each other"
    )

    def join(name: str, scheduler: str, **extra: Any) -> PeerProcess:
        return start_peer(
            name,
            host_id=name,
            scheduler=scheduler,
            token=replicas[0].token,
            upstream={
                "default_registry": registry.host,
                "insecure_registries": [registry.host],
                "endpoints": {registry.host: counting_proxy.url},
            },
            **extra,
        )

    both = ",".join(urls)
    # A seed that holds the image and uploads slowly, so the children's pulls last.
    seed = join("seed", both, seed=True, upload_rate_bps=2 * MiB)
    assert _pull(seed, image) == {d: d for d in image.blob_digests}
    # Children configured with one replica each, or both: they learn the rest from Redis.
    children = [join(f"child{i}", [urls[0], urls[1], both][i % 3]) for i in range(CHILDREN)]
    return Cluster(replicas, seed, children)


def _pull_during(cluster: Cluster, image: PushedImage, fault: Callable[[], None]) -> None:
    """All children pull at once; ``fault`` runs once they are receiving pieces. Fails
    unless the fault came while every pull was still going and every digest matched."""
    done: list[bool] = []
    fault_error: list[BaseException] = []

    def inject() -> None:
        try:
            wait_until(lambda: _swarm_bytes(cluster.children) >= MiB, 60, "pieces to flow")
            total = CHILDREN * image.total_blob_bytes
            done.append(_swarm_bytes(cluster.children) < total / 2)
            fault()
        except BaseException as exc:  # reported by the test thread
            fault_error.append(exc)

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    with ThreadPoolExecutor(CHILDREN) as pool:
        results = list(pool.map(lambda peer: _pull(peer, image), cluster.children))
    injector.join(timeout=60)
    assert not fault_error, fault_error
    assert done == [True], "the fault came after most of the bytes had moved"
    for got in results:
        assert got == {d: d for d in image.blob_digests}
    for peer in [cluster.seed, *cluster.children]:
        # Never without a scheduler: the other replica (or memory) answered every time.
        assert metric_value(peer.metrics(), "p2p_peer_scheduler_unavailable_total") == 0


def test_a_replica_killed_mid_pull_its_tasks_move_and_every_pull_succeeds(
    cluster: Cluster, image: PushedImage
) -> None:
    urls = [r.url for r in cluster.replicas]
    # Kill the owner of the largest layer: its task is the one still in flight.
    largest = max(image.layers, key=lambda layer: layer[1])[0]
    victim = next(r for r in cluster.replicas if r.url == rank(largest, urls)[0])
    survivor = next(r for r in cluster.replicas if r is not victim)

    _pull_during(cluster, image, victim.kill)  # SIGKILL: no goodbye

    # The survivor took over the victim's tasks, with trusted piece digests.
    for digest in image.blob_digests:
        answer = _get(survivor, f"/api/v1/tasks/{digest}/pieces")
        assert answer["piece_digests"], digest
    wait_until(lambda: _listed(survivor) == [survivor.url], 10, "the dead replica to expire")


def test_redis_restarted_mid_pull_every_pull_succeeds(
    cluster: Cluster, image: PushedImage, redis_server: RedisProcess
) -> None:
    urls = sorted(r.url for r in cluster.replicas)

    def restart_redis() -> None:
        redis_server.kill()
        wait_until(
            lambda: all(
                _get(r, "/api/v1/replicas")["store"] == "unreachable" for r in cluster.replicas
            ),
            10,
            "the replicas to notice Redis is gone",
        )

        def silent_for_two_ttls() -> bool:
            replicas = _get(cluster.replicas[0], "/api/v1/replicas")["replicas"]
            return max(r["heartbeat_age_s"] for r in replicas) > 2 * TTL_S

        wait_until(silent_for_two_ttls, 10, "two TTLs without Redis")
        # Frozen, not shrunk: peers keep routing every task where they did.
        assert all(_listed(r) == urls for r in cluster.replicas)
        redis_server.start()  # empty: the replicas must register again

    _pull_during(cluster, image, restart_redis)

    def registered_again() -> bool:
        answers = [_get(r, "/api/v1/replicas") for r in cluster.replicas]
        return all(a["store"] == "reachable" for a in answers) and all(
            [x["url"] for x in a["replicas"]] == urls for a in answers
        )

    wait_until(registered_again, 10, "both replicas registered in the new Redis")
