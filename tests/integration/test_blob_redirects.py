"""Blob redirects to object storage, as a registry with the redirect middleware sends them.

The CNCF registry's ``redirect`` storage middleware answers blob GETs with a 307 to
``baseurl + <storage path>``; a static file server over the registry's storage directory
plays the object store. The client's credentials must never reach it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from peer.pieces import MiB
from tests.integration.conftest import PeerFactory
from tests.support.images import push_image_async
from tests.support.registry import RegistryProcess, registry_unavailable_reason
from tests.support.registry_client import RegistryClient
from tests.support.requirements import require
from tests.support.threaded_server import ThreadedServer
from tests.support.token_server import TokenServer


class ObjectStore:
    """Serves the registry's storage directory and remembers the headers it was sent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.authorizations: list[str | None] = []
        self.requests = 0
        app = web.Application()
        app.router.add_get("/{path:.*}", self._get)
        self.server = ThreadedServer(app, name="object-store")

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.authorizations.append(request.headers.get("Authorization"))
        path = (self.root / request.match_info["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)


@pytest.fixture
def redirecting_registry(
    tmp_path: Path,
) -> Iterator[tuple[RegistryProcess, TokenServer, ObjectStore]]:
    require(registry_unavailable_reason())
    token_server = TokenServer({"alice": "wonderland"}).start()
    store = ObjectStore(tmp_path / "registry" / "storage")
    store.server.start()
    registry = RegistryProcess(
        tmp_path / "registry",
        token_server=token_server,
        extra_config={
            "middleware": {
                "storage": [{"name": "redirect", "options": {"baseurl": store.server.url + "/"}}]
            }
        },
    )
    try:
        registry.start()
        yield registry, token_server, store
    finally:
        registry.stop()
        store.server.stop()
        token_server.stop()


async def test_redirected_blobs_are_fetched_without_the_clients_credentials(
    redirecting_registry: tuple[RegistryProcess, TokenServer, ObjectStore],
    make_peer: PeerFactory,
    tmp_path: Path,
) -> None:
    registry, _, store = redirecting_registry
    image = await push_image_async(
        registry.url,
        "private/app",
        "v1",
        [6 * MiB],
        seed=5,
        auth=("alice", "wonderland"),
        work_dir=tmp_path / "image",
    )
    layer, size = image.layers[0]
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(session, registry.url, image.repo, ("alice", "wonderland"))
        await client.authorize("pull")
        authorization = client._headers["Authorization"]
        assert authorization.startswith("Bearer ")

        peer = await make_peer(registry.host)
        url = str(peer.make_url(f"/v2/{image.repo}/blobs/{layer}?ns={registry.host}"))
        async with session.get(url) as resp:
            assert resp.status == 401  # no credentials: the registry's challenge
        async with session.get(url, headers={"Authorization": authorization}) as resp:
            assert resp.status == 200
            body = await resp.read()
    assert len(body) == size and "sha256:" + hashlib.sha256(body).hexdigest() == layer
    # The registry really redirected, and the object store never saw the token.
    assert store.requests >= 2  # a HEAD for the access check, then the pieces
    assert store.authorizations and all(a is None for a in store.authorizations)
