"""A real containerd, configured only by ``p2pctl containerd-config``, pulls through a
real ``p2p-peer`` process, and falls back to the registry when the peer is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess, metric_value
from tests.support.containerd import ContainerdProcess
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.registry import RegistryProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    layers = [6 * MiB, 1 * MiB]
    return push_image(registry.url, "ops/pulled", "v1", layers, seed=5, work_dir=tmp_path / "img")


@pytest.fixture
def peer(registry: RegistryProcess, counting_proxy: CountingProxy, start_peer: Any) -> PeerProcess:
    # The peer reaches the registry through the counting proxy; containerd's own fallback
    # goes straight to the registry. So proxy counts prove which way the bytes went.
    upstream = {
        "default_registry": registry.host,
        "insecure_registries": [registry.host],
        "endpoints": {registry.host: counting_proxy.url},
    }
    peer: PeerProcess = start_peer(upstream=upstream)
    return peer


def p2pctl(*args: str) -> str:
    """The installed console script, as an operator runs it."""
    script = Path(sys.executable).parent / "p2pctl"
    assert script.exists(), f"{script} missing: run `make venv` (pip install -e '.[dev]')"
    result = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_pulled(containerd: ContainerdProcess, image: PushedImage, namespace: str) -> None:
    layers = containerd.image_layer_digests(image.reference, namespace)
    assert layers == [digest for digest, _ in image.layers]
    assert set(image.blob_digests) <= containerd.content_digests(namespace)


@pytest.mark.parametrize("registries", [["REGISTRY"], []], ids=["registry", "_default"])
def test_containerd_pulls_through_the_peer_then_falls_back_without_it(
    registries: list[str],
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    containerd: ContainerdProcess,
    image: PushedImage,
    peer: PeerProcess,
    tmp_path: Path,
) -> None:
    hosts = tmp_path / "certs.d"
    names = [registry.host if r == "REGISTRY" else r for r in registries]
    out = p2pctl(
        "containerd-config",
        "--config-dir",
        str(hosts),
        "--mirror",
        peer.url,
        *names,
        *(["--insecure-registry", registry.host] if names else []),
    )
    expected_dir = names[0] if names else "_default"
    assert f"wrote {hosts / expected_dir / 'hosts.toml'}" in out

    result = containerd.pull(image.reference, namespace="through-peer", hosts_dir=hosts)
    assert result.returncode == 0, result.stderr + peer.log_text()
    assert_pulled(containerd, image, "through-peer")
    metrics = peer.metrics()
    assert metric_value(metrics, "p2p_peer_served_bytes_total") == image.total_blob_bytes
    for digest, size in image.blob_sizes.items():
        assert counting_proxy.blob_bytes.get(digest) == size, digest

    peer.stop()
    result = containerd.pull(image.reference, namespace="peer-gone", hosts_dir=hosts)
    assert result.returncode == 0, result.stderr
    assert_pulled(containerd, image, "peer-gone")
    # From the registry itself: the proxy in front of the peer's upstream saw no more.
    for digest, size in image.blob_sizes.items():
        assert counting_proxy.blob_bytes.get(digest) == size, digest
