"""Real containerd pulling through a real ``p2p-peer`` process from a real registry."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB, piece_length_for
from tests.e2e.conftest import metric_value
from tests.support.containerd import ContainerdProcess, write_hosts_toml
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.registry import RegistryProcess, TokenRegistry
from tests.support.requirements import require
from tests.support.skopeo import skopeo_copy, skopeo_unavailable_reason

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _peer_settings(registry_host: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstream": {
            "default_registry": registry_host,
            "insecure_registries": [registry_host],
            "endpoints": {registry_host: endpoint},
        },
        **extra,
    }


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _assert_pulled(containerd: ContainerdProcess, image: PushedImage, namespace: str) -> None:
    assert containerd.image_layer_digests(image.reference, namespace) == [
        digest for digest, _ in image.layers
    ]
    for digest in image.blob_digests:
        assert _sha256_file(containerd.content_path(digest)) == digest


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url,
        "starling/app",
        "v1",
        [40 * MiB, 10 * MiB, 1 * MiB],
        seed=1,
        work_dir=tmp_path / "image",
    )


def test_two_namespaces_pull_through_the_peer_and_the_registry_serves_each_blob_once(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    containerd: ContainerdProcess,
    image: PushedImage,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    peer = start_peer(**_peer_settings(registry.host, counting_proxy.url))
    hosts = tmp_path / "hosts"
    # If the mirror failed, containerd would go to the registry directly: bypassing the
    # counting proxy, so the counts below prove the pulls went through the peer.
    write_hosts_toml(hosts, registry.host, [peer.url], server_url=registry.url)

    for namespace in ("first", "second"):
        result = containerd.pull(image.reference, namespace=namespace, hosts_dir=hosts)
        assert result.returncode == 0, result.stderr + peer.log_text()
        _assert_pulled(containerd, image, namespace)

    for digest, size in image.blob_sizes.items():
        assert counting_proxy.blob_bytes.get(digest) == size, digest
    metrics = peer.metrics()
    assert metric_value(metrics, "p2p_peer_blob_requests_total", 'result="hit"') >= 4
    assert (
        metric_value(metrics, "p2p_peer_download_bytes_total", 'source="origin"')
        == image.total_blob_bytes
    )
    assert metric_value(metrics, "p2p_peer_served_bytes_total") == 2 * image.total_blob_bytes


def test_skopeo_copies_through_the_peer_as_a_mirror(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    image: PushedImage,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    require(skopeo_unavailable_reason())
    peer = start_peer(**_peer_settings(registry.host, counting_proxy.url))
    dest = tmp_path / "copy"
    skopeo_copy(image.reference, dest, registries_conf_mirror=(registry.host, peer.host))
    for digest in image.blob_digests:
        assert _sha256_file(dest / digest.split(":")[1]) == digest
    for digest, size in image.blob_sizes.items():
        assert counting_proxy.blob_bytes.get(digest) == size
    assert metric_value(peer.metrics(), "p2p_peer_served_bytes_total") == image.total_blob_bytes


def test_dead_upstream_or_dead_peer_falls_back_to_the_registry(
    registry: RegistryProcess,
    containerd: ContainerdProcess,
    image: PushedImage,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    peer = start_peer(**_peer_settings(registry.host, "http://127.0.0.1:9"))
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, registry.host, [peer.url], server_url=registry.url)
    result = containerd.pull(image.reference, namespace="upstream-down", hosts_dir=hosts)
    assert result.returncode == 0, result.stderr
    _assert_pulled(containerd, image, "upstream-down")
    assert "upstream unavailable" in peer.log_text()

    peer.stop()
    result = containerd.pull(image.reference, namespace="peer-down", hosts_dir=hosts)
    assert result.returncode == 0, result.stderr
    _assert_pulled(containerd, image, "peer-down")


def test_token_auth_registry_through_the_peer(
    token_registry: TokenRegistry,
    containerd: ContainerdProcess,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    image = push_image(
        token_registry.url,
        "private/app",
        "v1",
        [3 * MiB, 1 * MiB],
        seed=3,
        auth=token_registry.auth,
        work_dir=tmp_path / "image",
    )
    peer = start_peer(**_peer_settings(token_registry.host, token_registry.url))
    hosts = tmp_path / "hosts"
    # Only the mirror: a fallback to the registry would hide a peer that fails.
    write_hosts_toml(hosts, token_registry.host, [peer.url], server_url=peer.url)

    anonymous = containerd.pull(image.reference, namespace="anon", hosts_dir=hosts)
    assert anonymous.returncode != 0
    assert metric_value(peer.metrics(), "p2p_peer_served_bytes_total") == 0

    user = ":".join(token_registry.auth)
    result = containerd.pull(image.reference, namespace="user", hosts_dir=hosts, user=user)
    assert result.returncode == 0, result.stderr + peer.log_text()
    _assert_pulled(containerd, image, "user")
    assert metric_value(peer.metrics(), "p2p_peer_served_bytes_total") == image.total_blob_bytes

    # Now the blobs sit in the peer's cache: still no byte for a client without access.
    again = containerd.pull(image.reference, namespace="anon-again", hosts_dir=hosts)
    assert again.returncode != 0
    # Straight at the blob, skipping the manifest: refused with the registry's challenge.
    layer = image.layers[0][0]
    url = f"{peer.url}/v2/{image.repo}/blobs/{layer}?ns={token_registry.host}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    assert "Bearer" in refused.value.headers["WWW-Authenticate"]
    assert metric_value(peer.metrics(), "p2p_peer_served_bytes_total") == image.total_blob_bytes


def test_corrupt_upstream_fails_cleanly_and_caches_nothing(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    containerd: ContainerdProcess,
    image: PushedImage,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    peer = start_peer(**_peer_settings(registry.host, counting_proxy.url))
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, registry.host, [peer.url], server_url=peer.url)
    counting_proxy.corrupt_blobs = True
    result = containerd.pull(image.reference, namespace="corrupt", hosts_dir=hosts, timeout_s=120)
    assert result.returncode != 0
    assert result.stderr.strip()  # containerd says why (a digest error or a short body)
    # Downloads containerd started may still be finishing (and failing) in the peer.
    deadline = time.monotonic() + 30
    while peer.health()["tasks_active"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert peer.health()["cache_blobs"] == 0
    assert not list((peer.data_dir / "blobs").glob("*/*"))
    assert "expected sha256:" in peer.log_text()

    # containerd keeps the bytes it received in its ingest and resumes from there, so
    # its own retries keep failing (as they would pulling the corrupt registry
    # directly); the peer itself recovers at once and serves the verified blob.
    counting_proxy.corrupt_blobs = False
    layer, size = image.layers[0]
    url = f"{peer.url}/v2/{image.repo}/blobs/{layer}?ns={registry.host}"
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
    assert len(body) == size and "sha256:" + hashlib.sha256(body).hexdigest() == layer
    assert peer.health()["cache_blobs"] == 1


def test_upstream_stalled_from_the_start_falls_back_to_the_registry(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    containerd: ContainerdProcess,
    image: PushedImage,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    settings = _peer_settings(registry.host, counting_proxy.url, stall_timeout_s=2)
    peer = start_peer(**settings)
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, registry.host, [peer.url], server_url=registry.url)
    counting_proxy.stall_after_bytes = 0
    started = time.monotonic()
    result = containerd.pull(image.reference, namespace="stall-start", hosts_dir=hosts)
    counting_proxy.release_stalls()
    assert result.returncode == 0, result.stderr + peer.log_text()
    _assert_pulled(containerd, image, "stall-start")
    # Each blob cost containerd one stall timeout at most, never a hang.
    assert time.monotonic() - started < 30
    assert "answering 502 before any byte" in peer.log_text()


def test_upstream_stalling_mid_body_is_resumed_on_the_peer(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    containerd: ContainerdProcess,
    image: PushedImage,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    settings = _peer_settings(
        registry.host, counting_proxy.url, stall_timeout_s=2, origin_concurrency=1, piece_attempts=5
    )
    settings["upstream"]["read_timeout_s"] = 2  # stalled piece reads time out, are retried
    peer = start_peer(**settings)
    hosts = tmp_path / "hosts"
    # Only the peer: the pull must succeed through it, by resuming.
    write_hosts_toml(hosts, registry.host, [peer.url], server_url=peer.url)
    big_layer = image.layers[0][0]
    # The registry stalls once 8 MiB of the big layer went out; it heals 3 s later.
    counting_proxy.stall_after_blob_bytes = 8 * MiB
    healer = threading.Timer(3, _heal, (counting_proxy,))
    healer.start()
    try:
        result = containerd.pull(image.reference, namespace="stall-mid", hosts_dir=hosts)
    finally:
        healer.cancel()
        _heal(counting_proxy)
    assert result.returncode == 0, result.stderr + peer.log_text()
    _assert_pulled(containerd, image, "stall-mid")
    log_text = peer.log_text()
    assert "attempt 1/5 failed" in log_text
    # The response was cut short and containerd came back for the rest with a Range.
    assert "ending response at byte" in log_text
    assert f"{big_layer}: range bytes" in log_text


def _heal(proxy: CountingProxy) -> None:
    proxy.stall_after_bytes = None
    proxy.stall_after_blob_bytes = None
    proxy.release_stalls()


def test_peer_killed_mid_download_resumes_after_restart(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    image: PushedImage,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    big_layer, size = image.layers[0]
    settings = _peer_settings(registry.host, counting_proxy.url, origin_concurrency=1)
    peer = start_peer("killed", **settings)
    url = f"{peer.url}/v2/{image.repo}/blobs/{big_layer}?ns={registry.host}"
    progress = peer.data_dir / "tasks" / "sha256" / (big_layer.split(":")[1] + ".json")

    def verified_pieces() -> int:
        try:
            return len(json.loads(progress.read_text())["piece_digests"])
        except (OSError, ValueError):
            return 0

    piece = piece_length_for(size)  # the peer's own piece length for this layer
    pieces = -(-size // piece)
    # The registry stalls once 3 pieces went out, so the kill lands mid-download.
    counting_proxy.stall_after_blob_bytes = 3 * piece
    client = threading.Thread(target=_read_quietly, args=(url,), daemon=True)
    client.start()
    deadline = time.monotonic() + 30
    while verified_pieces() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    kept = verified_pieces()
    assert kept >= 2, peer.log_text()
    peer.kill()  # SIGKILL: no chance to tidy up
    _heal(counting_proxy)
    before = counting_proxy.blob_bytes.get(big_layer, 0)

    restarted = start_peer("killed", **settings)
    with urllib.request.urlopen(url.replace(peer.url, restarted.url), timeout=60) as resp:
        body = resp.read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == big_layer
    assert f"resuming with {kept} of {pieces} pieces" in restarted.log_text()
    # Only what was not verified before the kill came from the registry again.
    assert counting_proxy.blob_bytes[big_layer] - before == size - kept * piece


def _read_quietly(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            while resp.read(1 << 20):
                pass
    except OSError:
        pass
