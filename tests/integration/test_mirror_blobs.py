"""The peer's mirror against a real registry, behind a counting, fault-injecting proxy."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from peer.daemon import PeerDaemon
from peer.pieces import MiB, piece_length_for
from peer.storage import BlobStore, TaskProgress
from tests.integration.conftest import PeerFactory, engine_of
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image_async
from tests.support.registry import RegistryProcess
from tests.support.tmpfs import mounted_tmpfs

pytestmark = pytest.mark.timeout(120)


async def _push(registry: RegistryProcess, tmp_path: Path, sizes: list[int]) -> PushedImage:
    return await push_image_async(
        registry.url, "starling/test", "v1", sizes, seed=7, work_dir=tmp_path / "image"
    )


def _blob_url(peer: PeerDaemon, image: PushedImage, digest: str) -> str:
    return str(peer.make_url(f"/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"))


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.read()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_blob_downloaded_once_in_pieces_then_served_from_cache(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [20 * MiB])
    layer, size = image.layers[0]
    peer = await make_peer(registry.host, counting_proxy.url)

    for _ in range(2):
        status, body = await _get(_blob_url(peer, image, layer))
        assert status == 200
        assert len(body) == size and _sha(body) == layer

    # Fetched with a few Range requests (4 workers, each taking a span of the pieces
    # left, spans shrinking as the queue drains), not one per 1 MiB piece, and every
    # byte exactly once.
    assert counting_proxy.blob_bytes[layer] == size
    assert 1 < counting_proxy.blob_gets[layer] <= size // (2 * MiB)
    engine = engine_of(peer)
    assert engine.complete(layer).size_bytes == size
    # Every piece arrived close enough to the in-order digest check to be checked from
    # memory, as it arrived, rather than read back from the file.
    verified = engine.metrics.registry.get_sample_value
    assert verified("p2p_peer_blob_verified_bytes_total", {"read_from": "memory"}) == size
    assert verified("p2p_peer_blob_verified_bytes_total", {"read_from": "file"}) in (None, 0)


async def test_concurrent_clients_share_one_download(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [24 * MiB])
    layer, size = image.layers[0]
    peer = await make_peer(registry.host, counting_proxy.url)
    results = await asyncio.gather(*(_get(_blob_url(peer, image, layer)) for _ in range(6)))
    assert all(status == 200 and _sha(body) == layer for status, body in results)
    assert counting_proxy.blob_bytes[layer] == size


@pytest.mark.parametrize("warm", [False, True])
async def test_range_requests_are_served_from_pieces(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    make_peer: PeerFactory,
    tmp_path: Path,
    warm: bool,
) -> None:
    image = await _push(registry, tmp_path, [10 * MiB])
    layer, size = image.layers[0]
    content = image.blob_paths[layer].read_bytes()
    peer = await make_peer(registry.host, counting_proxy.url)
    url = _blob_url(peer, image, layer)
    if warm:
        await _get(url)
    async with aiohttp.ClientSession() as session:
        for header, expected in [
            (f"bytes={5 * MiB}-{5 * MiB + 99}", content[5 * MiB : 5 * MiB + 100]),
            ("bytes=-10", content[-10:]),
            (f"bytes={size - 3}-", content[-3:]),
        ]:
            async with session.get(url, headers={"Range": header}) as resp:
                assert resp.status == 206, header
                assert await resp.read() == expected
                first, last = resp.headers["Content-Range"].split(" ")[1].split("/")[0].split("-")
                assert int(last) - int(first) + 1 == len(expected)
        async with session.get(url, headers={"Range": f"bytes={size}-"}) as resp:
            assert resp.status == 416
            assert (await resp.json())["errors"][0]["code"] == "RANGE_INVALID"


async def test_client_disconnect_does_not_cancel_the_shared_download(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [32 * MiB])
    layer, size = image.layers[0]
    peer = await make_peer(registry.host, counting_proxy.url)
    url = _blob_url(peer, image, layer)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        await resp.content.readexactly(1 * MiB)
        resp.close()  # hang up mid-body
    status, body = await _get(url)
    assert status == 200 and _sha(body) == layer
    assert counting_proxy.blob_bytes[layer] == size


async def test_corrupt_upstream_bytes_never_complete_a_response_nor_the_cache(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [9 * MiB])
    layer, size = image.layers[0]
    peer = await make_peer(registry.host, counting_proxy.url)
    counting_proxy.corrupt_blobs = True
    received = b""
    async with (
        aiohttp.ClientSession() as session,
        session.get(_blob_url(peer, image, layer)) as resp,
    ):
        with contextlib.suppress(aiohttp.ClientPayloadError):
            received = await resp.read()
    # Either an error status or a body cut short: never the full length with bad content.
    assert resp.status != 200 or len(received) < size
    engine = engine_of(peer)
    assert engine.complete(layer) is None
    assert not engine.store.blob_path(layer).exists()
    assert not engine.store.part_path(layer).exists()

    counting_proxy.corrupt_blobs = False
    status, body = await _get(_blob_url(peer, image, layer))
    assert status == 200 and _sha(body) == layer


async def test_upstream_errors_are_oci_errors(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [1 * MiB])
    peer = await make_peer(registry.host, counting_proxy.url)
    missing = "sha256:" + "0" * 64
    status, body = await _get(_blob_url(peer, image, missing))
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"

    dead = await make_peer(registry.host, "http://127.0.0.1:9", data_dir=tmp_path / "dead")
    status, body = await _get(_blob_url(dead, image, image.layers[0][0]))
    assert status == 502
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"

    counting_proxy.fail_blobs_with = 500
    status, body = await _get(_blob_url(peer, image, image.layers[0][0]))
    assert status >= 500 and json.loads(body)["errors"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/UPPER/blobs/sha256:" + "a" * 64, 400, "NAME_INVALID"),
        ("GET", "/v2/a/blobs/sha256:xyz", 400, "DIGEST_INVALID"),
        ("GET", "/v2/a/manifests/bad..tag!", 400, "MANIFEST_INVALID"),
        ("POST", "/v2/a/blobs/uploads/", 405, "UNSUPPORTED"),
        ("PUT", "/v2/a/manifests/v1", 405, "UNSUPPORTED"),
        ("GET", "/v2/a/unknown/x", 404, "UNSUPPORTED"),
        ("GET", "/v2/a/blobs/sha256:" + "a" * 64 + "?ns=bad/host", 400, "NAME_INVALID"),
    ],
)
async def test_malformed_requests_get_oci_errors(
    registry: RegistryProcess,
    make_peer: PeerFactory,
    method: str,
    path: str,
    status: int,
    code: str,
) -> None:
    peer = await make_peer(registry.host)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, str(peer.make_url(path))) as resp,
    ):
        assert resp.status == status
        assert resp.content_type == "application/json"
        assert (await resp.json())["errors"][0]["code"] == code


async def test_repeated_accept_headers_reach_the_registry_unchanged(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [1 * MiB])
    peer = await make_peer(registry.host, counting_proxy.url)
    # The registry only returns an OCI manifest to a client that accepts OCI; a proxy
    # that folds repeated headers into a dict keeps the last one and breaks this.
    accept = [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
    url = str(peer.make_url(f"/v2/{image.repo}/manifests/{image.tag}?ns={image.registry_host}"))
    headers = CIMultiDict([("Accept", a) for a in accept])
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Docker-Content-Digest"] == image.manifest_digest
            assert await resp.read() == image.manifest
        async with session.head(url, headers=headers) as resp:
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == len(image.manifest)
        # The registry does discriminate, so the test above can fail: the last header
        # alone (what a dict-folding proxy would send) is refused.
        async with session.get(url, headers={"Accept": accept[-1]}) as resp:
            assert resp.status != 200
    seen = [r for r in counting_proxy.requests if "/manifests/" in r.path]
    assert seen and all("ns=" not in r.path for r in seen)


async def test_cache_quota_evicts_least_recently_used(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [6 * MiB, 6 * MiB, 12 * MiB])
    (a, _), (b, _), (big, _) = image.layers
    peer = await make_peer(registry.host, counting_proxy.url, cache_quota_bytes=14 * MiB)
    engine = engine_of(peer)
    for digest in (a, b):
        assert (await _get(_blob_url(peer, image, digest)))[0] == 200
    status, body = await _get(_blob_url(peer, image, big))
    assert status == 200 and _sha(body) == big
    assert engine.complete(a) is None and engine.complete(b) is None
    assert not engine.store.blob_path(a).exists()
    assert engine.index.blob_bytes <= 14 * MiB

    tiny = await make_peer(
        registry.host, counting_proxy.url, cache_quota_bytes=1 * MiB, data_dir=tmp_path / "tiny"
    )
    status, body = await _get(_blob_url(tiny, image, big))
    assert status == 503
    assert "quota" in json.loads(body)["errors"][0]["message"]


async def test_restart_resumes_verified_pieces_and_refetches_the_rest(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [10 * MiB])
    layer, size = image.layers[0]
    content = image.blob_paths[layer].read_bytes()
    data_dir = tmp_path / "peer"
    # What a daemon killed mid-download leaves: pieces 0 and 1 verified and recorded,
    # piece 2 written but not yet verified, and piece 1 since damaged on disk.
    piece = piece_length_for(size)  # what the peer will use, so the progress is its own
    store = BlobStore(data_dir)
    fd, _ = store.open_task(layer, size, piece)
    os.pwrite(fd, content[: 3 * piece], 0)
    damaged_at = piece + piece // 2
    os.pwrite(fd, bytes([content[damaged_at] ^ 0xFF]), damaged_at)
    os.close(fd)
    digests = [_sha(content[i * piece : (i + 1) * piece]) for i in range(2)]
    store.save_progress(TaskProgress(layer, size, piece, digests))

    peer = await make_peer(registry.host, counting_proxy.url, data_dir=data_dir)
    status, body = await _get(_blob_url(peer, image, layer))
    assert status == 200 and _sha(body) == layer
    # Piece 0 was kept; piece 1 (damaged), piece 2 (unverified) and the rest came again.
    assert counting_proxy.blob_bytes[layer] == size - piece


async def test_stalled_upstream_ends_the_response_so_the_client_can_resume(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [12 * MiB])
    layer, size = image.layers[0]
    peer = await make_peer(
        registry.host, counting_proxy.url, stall_timeout_s=1.0, read_timeout_s=1.0
    )
    counting_proxy.stall_after_bytes = 1 * MiB
    url = _blob_url(peer, image, layer)
    received = b""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        # Either a clean error before any byte, or a body ended short: never a hang.
        if resp.status == 200:
            with pytest.raises(aiohttp.ClientPayloadError):
                received = await resp.read()
    counting_proxy.stall_after_bytes = None
    counting_proxy.release_stalls()
    # Resume as containerd does, from where the body stopped.
    headers = {"Range": f"bytes={len(received)}-"} if received else {}
    status, rest = await _get(url, headers)
    assert status in (200, 206)
    assert _sha(received + rest) == layer


async def test_first_bytes_reach_the_client_before_the_download_ends(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await _push(registry, tmp_path, [8 * MiB])
    layer, _ = image.layers[0]
    peer = await make_peer(
        registry.host, counting_proxy.url, min_piece_bytes=1 * MiB, origin_concurrency=1
    )
    counting_proxy.stall_after_blob_bytes = 1 * MiB  # the registry dies after piece 0
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(_blob_url(peer, image, layer)) as resp,
        ):
            assert resp.status == 200
            first = await resp.content.readexactly(1 * MiB)
            # The rest of the blob is stuck upstream, yet the client has its first piece.
            assert engine_of(peer).running(layer) is not None
            assert first == image.blob_paths[layer].read_bytes()[: 1 * MiB]
            counting_proxy.stall_after_blob_bytes = None
            counting_proxy.release_stalls()
            rest = await resp.read()
        assert _sha(first + rest) == layer
    finally:
        counting_proxy.stall_after_blob_bytes = None
        counting_proxy.release_stalls()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: a disk that fills up."""
    with mounted_tmpfs(tmp_path / "tiny-disk", 12 * MiB) as disk:
        yield disk


async def test_full_disk_fails_that_blob_cleanly_and_the_daemon_carries_on(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    make_peer: PeerFactory,
    tmp_path: Path,
    tiny_disk: Path,
) -> None:
    image = await _push(registry, tmp_path, [16 * MiB, 2 * MiB])
    (big, _), (small, _) = image.layers
    peer = await make_peer(registry.host, counting_proxy.url, data_dir=tiny_disk / "peer")
    status, body = await _get(_blob_url(peer, image, big))
    assert status == 503
    message = json.loads(body)["errors"][0]["message"]
    assert "cannot allocate" in message and "No space left" in message
    assert not list((tiny_disk / "peer" / "tasks").glob("*/*"))  # nothing half-written left
    status, body = await _get(_blob_url(peer, image, small))
    assert status == 200 and _sha(body) == small


def test_startup_sweeps_stale_partials_and_interrupted_writes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    fresh, stale = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    for digest in (fresh, stale):
        fd, _ = store.open_task(digest, 10, 4)
        os.close(fd)
    old = time.time() - 2 * 24 * 3600
    for path in (store.part_path(stale), store.part_path(stale).with_suffix(".json")):
        os.utime(path, (old, old))
    leftover = store.blobs_dir / "sha256" / ("3" * 64 + ".json.tmp")
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_text("{")
    foreign = store.blobs_dir / "sha256" / "x.json.tmp"  # not named after a digest: not ours
    foreign.write_text("{")
    assert store.sweep(time.time(), 24 * 3600) == 2
    assert store.partial_tasks() == [fresh]
    assert not leftover.exists()
    assert foreign.exists()
