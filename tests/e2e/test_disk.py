"""A real ``p2p-peer`` process on a small tmpfs that fills up, and garbage collection that
touches only the peer's own files.

The tmpfs is mounted under the test's temp dir and unmounted at teardown (root needed:
``make test`` runs as root). "Full" means filled to the brim by another file, as when
containerd's content store shares the disk: not even one more page fits.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess, metric_value
from tests.e2e.swarm_helpers import blob_url, peer_settings
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess
from tests.support.tmpfs import mounted_tmpfs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DISK_BYTES = 24 * MiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of our own (the peer using it stops first: it was started later)."""
    with mounted_tmpfs(tmp_path / "small-disk", DISK_BYTES) as disk:
        yield disk


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url, "disk/app", "v1", [8 * MiB, 1 * MiB], seed=81, work_dir=tmp_path / "image"
    )


def _fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte with one file; returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk_bytes in (MiB, 4096, 1):
            chunk = b"\0" * chunk_bytes
            while True:
                try:
                    out.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    stats = os.statvfs(disk)
    assert stats.f_bavail == 0, stats
    return filler


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _our_files(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())


def _peer(
    start_peer: Any, registry: RegistryProcess, proxy: CountingProxy, data_dir: Path, **extra: Any
) -> PeerProcess:
    settings = peer_settings(registry.host, proxy.url, None, **extra)
    peer: PeerProcess = start_peer(data_dir=str(data_dir), **settings)
    return peer


def test_full_disk_fails_the_pull_with_an_oci_error_and_the_next_pull_works(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    image: PushedImage,
    small_disk: Path,
    start_peer: Any,
) -> None:
    data_dir = small_disk / "peer"
    peer = _peer(start_peer, registry, counting_proxy, data_dir)
    layer = image.layers[0][0]
    filler = _fill(small_disk)

    started = time.monotonic()
    status, body = _get(blob_url(peer, image, layer))
    # An OCI error at once (containerd moves on to its next host), not a hang, not a 200.
    assert status == 503, body
    error = json.loads(body)["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert "No space left on device" in error["message"], error
    assert time.monotonic() - started < 10
    assert peer.alive() and peer.health()["status"] == "ok"
    assert not [f for f in _our_files(data_dir) if f.startswith("tasks/")]  # nothing half-made

    filler.unlink()
    status, body = _get(blob_url(peer, image, layer))
    assert status == 200 and _sha(body) == layer
    assert peer.health()["cache_blobs"] == 1


def test_disk_filling_up_mid_download_fails_only_that_task_and_serves_nothing_partial(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    image: PushedImage,
    small_disk: Path,
    start_peer: Any,
) -> None:
    data_dir = small_disk / "peer"
    peer = _peer(start_peer, registry, counting_proxy, data_dir, origin_concurrency=1)
    layer, size = image.layers[0]
    # The registry stalls after 3 MiB of the layer, so the disk fills with the task
    # file already allocated and the download still under way.
    counting_proxy.stall_after_blob_bytes = 3 * MiB
    got: dict[str, Any] = {}

    def read() -> None:
        with urllib.request.urlopen(blob_url(peer, image, layer), timeout=60) as resp:
            got["status"] = resp.status
            got["body"] = resp.read()

    reader = threading.Thread(target=read)
    reader.start()
    wait_until(lambda: counting_proxy.blob_bytes.get(layer, 0) >= 3 * MiB, 30, "3 MiB")
    filler = _fill(small_disk)
    counting_proxy.stall_after_blob_bytes = None
    counting_proxy.release_stalls()  # the piece is fetched again, the rest follows
    reader.join(timeout=60)
    assert not reader.is_alive()

    # The blob matched its digest, so the client got all of it; but it could not be
    # kept: nothing of it is cached and its task file is gone, space given back.
    assert got["status"] == 200 and len(got["body"]) == size and _sha(got["body"]) == layer
    wait_until(lambda: peer.health()["tasks_active"] == 0, 10, "the task to end")
    assert peer.health()["cache_blobs"] == 0
    assert _our_files(data_dir) == []
    log_text = peer.log_text()
    assert "verified, but cannot be kept" in log_text and "No space left" in log_text
    assert "crashed" not in log_text and "Traceback" not in log_text, log_text
    assert metric_value(peer.metrics(), "p2p_peer_tasks_total", 'result="failed"') == 1

    # The daemon carries on: with room again, the same blob is fetched and kept.
    filler.unlink()
    status, body = _get(blob_url(peer, image, layer))
    assert status == 200 and _sha(body) == layer
    assert peer.health()["cache_blobs"] == 1


def test_startup_cleanup_and_eviction_touch_only_the_peers_own_files(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    image: PushedImage,
    tmp_path: Path,
    start_peer: Any,
) -> None:
    data_dir = tmp_path / "shared-dir"
    (small, small_size), (big, big_size) = image.layers[1], image.layers[0]
    hex_of = small.split(":")[1]
    old = time.time() - 2 * 24 * 3600
    foreign = {
        "notes.txt": "an operator's notes",
        "blobs/sha256/README": "not a digest",
        "blobs/sha256/README.json": "{not json",
        "blobs/other/thing.json": "{}",
        "blobs/sha256/backup.tmp": "someone's temp file",
        "tasks/sha256/download.part": "someone else's partial",
        "tasks/sha256/download.json": "{}",
    }
    ours = {  # leftovers of an earlier run the peer must clear
        f"blobs/sha256/{'0' * 64}": "a blob without its metadata",
        f"blobs/sha256/{hex_of}.json.tmp": "an interrupted metadata write",
        f"tasks/sha256/{'1' * 64}.part": "a partial download nobody resumed",
        f"tasks/sha256/{'1' * 64}.json": "{}",
    }
    for name, text in {**foreign, **ours}.items():
        path = data_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.startswith("tasks/sha256/" + "1"):
            os.utime(path, (old, old))
    for name in ("tasks/sha256/download.part", "tasks/sha256/download.json"):
        os.utime(data_dir / name, (old, old))  # stale-looking, but not ours

    # Room for one layer only: pulling the other evicts the first, and only it.
    peer = _peer(
        start_peer, registry, counting_proxy, data_dir, cache_quota_bytes=big_size + small_size // 2
    )
    for digest in (small, big):
        status, body = _get(blob_url(peer, image, digest))
        assert status == 200 and _sha(body) == digest
    assert peer.health()["cache_blobs"] == 1
    for name, text in foreign.items():
        assert (data_dir / name).read_text() == text, name
    for name in ours:
        assert not (data_dir / name).exists(), name
    assert not (data_dir / "blobs" / "sha256" / hex_of).exists()  # evicted


def test_partial_downloads_left_by_failures_count_against_the_quota(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    image: PushedImage,
    tmp_path: Path,
    start_peer: Any,
) -> None:
    (big, big_size), (small, _) = image.layers
    data_dir = tmp_path / "peer"
    peer = _peer(
        start_peer,
        registry,
        counting_proxy,
        data_dir,
        cache_quota_bytes=big_size + MiB // 2,
        piece_attempts=1,
        origin_concurrency=1,
        upstream={"read_timeout_s": 1.0},
    )
    # The registry goes silent after 3 MiB of the big layer: the download fails and
    # keeps its verified pieces on disk for a later resume.
    counting_proxy.stall_after_blob_bytes = 3 * MiB
    with contextlib.suppress(OSError, http.client.HTTPException):
        _get(blob_url(peer, image, big))
    wait_until(lambda: peer.health()["tasks_active"] == 0, 30, "the download to fail")
    part = data_dir / "tasks" / "sha256" / (big.split(":")[1] + ".part")
    assert part.exists()
    counting_proxy.stall_after_blob_bytes = None
    counting_proxy.release_stalls()

    # The kept partial and the next blob together would exceed the quota: the partial
    # goes, so the peer's files never hold more than the quota.
    status, body = _get(blob_url(peer, image, small))
    assert status == 200 and _sha(body) == small
    assert not part.exists()
    assert "dropping partial download" in peer.log_text()
    on_disk = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    assert on_disk <= big_size + MiB // 2 + 64 * 1024  # blobs plus their small metadata
