"""Helpers for tests that run a swarm of real processes: pulls, metrics, a peer factory."""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.e2e.conftest import PeerProcess, SchedulerProcess, metric_value
from tests.support.images import PushedImage

PULL_TIMEOUT_S = 120


def peer_settings(
    registry_host: str,
    endpoint: str,
    scheduler: SchedulerProcess | None,
    upstream: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A peer's config: ``registry_host``'s blobs come from ``endpoint`` (a proxy).

    ``upstream`` adds settings of the upstream section (timeouts); ``extra`` top-level ones.
    """
    swarm = {"scheduler": scheduler.url, "token": scheduler.token} if scheduler else {}
    return {
        **swarm,
        "upstream": {
            "default_registry": registry_host,
            "insecure_registries": [registry_host],
            "endpoints": {registry_host: endpoint},
            **(upstream or {}),
        },
        **extra,
    }


def blob_url(peer: PeerProcess, image: PushedImage, digest: str) -> str:
    return f"{peer.url}/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"


def pull(peer: PeerProcess, image: PushedImage) -> dict[str, str]:
    """Every blob of ``image`` through the peer's mirror, one GET each: digest -> sha256.

    One request per blob must do: a body cut short shows as a wrong digest.
    """
    got = {}
    for digest in image.blob_digests:
        sha = hashlib.sha256()
        with urllib.request.urlopen(blob_url(peer, image, digest), timeout=PULL_TIMEOUT_S) as resp:
            while chunk := resp.read(1 << 20):
                sha.update(chunk)
        got[digest] = "sha256:" + sha.hexdigest()
    return got


def assert_pulls(peers: list[PeerProcess], image: PushedImage) -> None:
    """All peers pull the image at once; every blob arrives whole with its digest."""
    with ThreadPoolExecutor(len(peers)) as pool:
        for got in pool.map(lambda p: pull(p, image), peers):
            assert got == {d: d for d in image.blob_digests}


def bytes_by_source(peer: PeerProcess) -> dict[str, float]:
    text = peer.metrics()
    return {
        source: metric_value(text, "p2p_peer_download_bytes_total", f'source="{source}"')
        for source in ("origin", "peer", "seed")
    }


def parent_failures(peer: PeerProcess) -> float:
    """Parents this peer gave up on, for any reason."""
    return sum(
        float(line.split()[-1])
        for line in peer.metrics().splitlines()
        if line.startswith("p2p_peer_parent_failures_total{")
    )


@dataclass
class Swarm:
    """A running scheduler, and a way to start peers that use it and the counted registry."""

    scheduler: SchedulerProcess
    join: Callable[..., PeerProcess]  # join(name, **settings): host_id is the name


def start_swarm(
    registry_host: str,
    endpoint: str,
    start_scheduler: Callable[[], SchedulerProcess],
    start_peer: Callable[..., PeerProcess],
) -> Swarm:
    """A scheduler, and peers that fetch ``registry_host``'s blobs from ``endpoint``."""
    scheduler = start_scheduler()

    def join(name: str, **extra: Any) -> PeerProcess:
        settings = peer_settings(registry_host, endpoint, scheduler, **extra)
        return start_peer(name, host_id=name, **settings)

    return Swarm(scheduler, join)
