"""Self-check of the real-component fixtures, with no Starling code in the path.

If these fail, every end-to-end test built on the fixtures is meaningless; if they pass,
a failing peer test points at the peer, not at the harness.
"""

from __future__ import annotations

import filecmp
import hashlib
import http.client
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.containerd import ContainerdProcess, write_hosts_toml
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess, TokenRegistry
from tests.support.requirements import require
from tests.support.skopeo import skopeo_copy, skopeo_unavailable_reason
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

LAYER_SIZES = [3_000_000, 1_000_000, 100_000]

# ctr logs this, and then quietly ignores the file, when hosts.toml is malformed; a pull
# would still "work" against the default host and prove nothing about the mirror config.
HOSTS_TOML_IGNORED = "failed to decode hosts.toml"


def _assert_pulled(containerd: ContainerdProcess, image: PushedImage, namespace: str) -> None:
    """containerd holds exactly the pushed layers, byte for byte."""
    layers = containerd.image_layer_digests(image.reference, namespace)
    assert layers == [digest for digest, _ in image.layers]
    for digest in image.blob_digests:
        assert filecmp.cmp(containerd.content_path(digest), image.blob_paths[digest], shallow=False)


def test_ctr_pulls_directly_from_registry(
    registry: RegistryProcess,
    containerd: ContainerdProcess,
    tmp_hosts_dir: Path,
    tmp_path: Path,
) -> None:
    image = push_image(
        registry.url, "selfcheck/direct", "v1", LAYER_SIZES, seed=1, work_dir=tmp_path / "image"
    )
    write_hosts_toml(tmp_hosts_dir, registry.host, mirrors=[], server_url=registry.url)

    result = containerd.pull(image.reference, "direct", hosts_dir=tmp_hosts_dir)

    assert result.returncode == 0, result.stderr
    assert HOSTS_TOML_IGNORED not in result.stderr
    _assert_pulled(containerd, image, "direct")


def test_ctr_pull_through_counting_proxy_counts_each_blob_once(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    containerd: ContainerdProcess,
    tmp_hosts_dir: Path,
    tmp_path: Path,
) -> None:
    image = push_image(
        registry.url, "selfcheck/proxied", "v1", LAYER_SIZES, seed=2, work_dir=tmp_path / "image"
    )
    write_hosts_toml(tmp_hosts_dir, registry.host, [counting_proxy.host], server_url=registry.url)

    result = containerd.pull(image.reference, "node-a", hosts_dir=tmp_hosts_dir)

    assert result.returncode == 0, result.stderr
    assert HOSTS_TOML_IGNORED not in result.stderr
    _assert_pulled(containerd, image, "node-a")
    assert counting_proxy.blob_gets == {digest: 1 for digest in image.blob_digests}
    assert counting_proxy.blob_bytes == image.blob_sizes
    assert counting_proxy.total_blob_bytes == image.total_blob_bytes

    # Namespaces do not share content (isolated policy), so a second namespace behaves
    # like a second node and downloads everything again.
    result = containerd.pull(image.reference, "node-b", hosts_dir=tmp_hosts_dir)
    assert result.returncode == 0, result.stderr
    assert counting_proxy.blob_gets == {digest: 2 for digest in image.blob_digests}


def _get(proxy: CountingProxy, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_counting_proxy_fault_switches(
    registry: RegistryProcess, counting_proxy: CountingProxy, tmp_path: Path
) -> None:
    image = push_image(
        registry.url, "selfcheck/faults", "v1", [200_000], seed=3, work_dir=tmp_path / "image"
    )
    digest, size = image.layers[0]
    path = f"/v2/selfcheck/faults/blobs/{digest}"

    counting_proxy.corrupt_blobs = True
    status, body = _get(counting_proxy, path)
    assert status == 200 and len(body) == size
    assert "sha256:" + hashlib.sha256(body).hexdigest() != digest
    counting_proxy.corrupt_blobs = False

    counting_proxy.fail_blobs_with = 503
    status, body = _get(counting_proxy, path)
    assert status == 503 and json.loads(body)["errors"]
    counting_proxy.fail_blobs_with = None

    counting_proxy.stall_after_bytes = 1000
    conn = http.client.HTTPConnection("127.0.0.1", counting_proxy.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        wait_until(
            lambda: counting_proxy.blob_bytes[digest] == size + 1000, 5, "the stalled 1000 bytes"
        )
        counting_proxy.release_stalls()
        with pytest.raises(http.client.IncompleteRead) as cut_short:
            response.read()
    finally:
        conn.close()
    assert cut_short.value.partial == image.blob_paths[digest].read_bytes()[:1000]

    assert counting_proxy.blob_gets == {digest: 3}
    assert counting_proxy.blob_bytes == {digest: size + 1000}


def test_token_registry_needs_credentials(
    token_registry: TokenRegistry,
    containerd: ContainerdProcess,
    tmp_hosts_dir: Path,
    tmp_path: Path,
) -> None:
    image = push_image(
        token_registry.url,
        "selfcheck/private",
        "v1",
        [100_000],
        seed=4,
        auth=token_registry.auth,
        work_dir=tmp_path / "image",
    )
    write_hosts_toml(tmp_hosts_dir, token_registry.host, [], server_url=token_registry.url)

    anonymous = containerd.pull(image.reference, "anonymous", hosts_dir=tmp_hosts_dir)
    assert anonymous.returncode != 0
    assert "insufficient_scope" in anonymous.stderr

    wrong = containerd.pull(
        image.reference,
        "wrong",
        hosts_dir=tmp_hosts_dir,
        user=f"{token_registry.username}:not-the-password",
    )
    assert wrong.returncode != 0

    user = f"{token_registry.username}:{token_registry.password}"
    result = containerd.pull(image.reference, "user", hosts_dir=tmp_hosts_dir, user=user)
    assert result.returncode == 0, result.stderr
    _assert_pulled(containerd, image, "user")


def _assert_copied(dest: Path, image: PushedImage) -> None:
    assert (dest / "manifest.json").read_bytes() == image.manifest
    for digest in image.blob_digests:
        copied = dest / digest.removeprefix("sha256:")
        assert filecmp.cmp(copied, image.blob_paths[digest], shallow=False)


def test_skopeo_copies_directly_and_through_mirror(
    registry: RegistryProcess, counting_proxy: CountingProxy, tmp_path: Path
) -> None:
    require(skopeo_unavailable_reason())
    image = push_image(
        registry.url, "selfcheck/skopeo", "v1", LAYER_SIZES, seed=5, work_dir=tmp_path / "image"
    )

    skopeo_copy(image.reference, tmp_path / "direct")
    _assert_copied(tmp_path / "direct", image)
    assert counting_proxy.blob_gets == {}

    skopeo_copy(image.reference, tmp_path / "mirrored", (registry.host, counting_proxy.host))
    _assert_copied(tmp_path / "mirrored", image)
    assert counting_proxy.blob_gets == {digest: 1 for digest in image.blob_digests}


async def test_threaded_server_serves_async_tests() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    async with (
        ThreadedServer(app) as server,
        aiohttp.ClientSession() as session,
        session.get(server.url) as response,
    ):
        assert response.status == 200
        assert await response.text() == "hello"
