"""TLS between the parts: a swarm whose piece servers and scheduler speak only HTTPS.

Real servers on loopback ports, real certificates made in the test (tests/support/tls.py),
the real scheduler app and real peer daemons. The mirror that clients pull from stays
plain HTTP on loopback, as containerd reaches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cluster_tls import TLSSettings
from peer.config import PeerConfig
from peer.daemon import PeerDaemon
from peer.pieces import MiB
from peer.scheduler_client import (
    SchedulerClient,
    SchedulerUnavailable,
    UseParents,
)
from registry_proxy.upstream import UpstreamConfig
from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig
from tests.support.announcements import host_announcement
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image_async
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess
from tests.support.tls import ClusterCA, bundle

pytestmark = pytest.mark.timeout(120)

TOKEN = "tls-test-token"


@dataclass
class Certificates:
    ca: ClusterCA  # the cluster's CA
    other: ClusterCA  # a CA the cluster does not trust
    node: TLSSettings  # the block every part of the cluster shares


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    ca = ClusterCA(tmp_path / "ca")
    other = ClusterCA(tmp_path / "other", "Other CA")
    # One certificate for every part, naming none of their addresses (as one Kubernetes
    # Secret for all nodes would): peers are reached by IP, and only the CA is checked.
    node = ca.issue("node", hosts=("starling",))
    return Certificates(ca, other, TLSSettings(**node.block()))


async def _scheduler(tls: TLSSettings | None) -> TestServer:
    """The scheduler app, served over HTTPS with ``tls`` as p2p-scheduler serves it."""
    server = TestServer(
        create_app(SchedulerConfig(token=TOKEN, rng_seed=1, tls=tls)), host="127.0.0.1"
    )
    await server.start_server(ssl=tls.server_context() if tls is not None else None)
    return server


@pytest.fixture
async def tls_scheduler(certificates: Certificates) -> AsyncIterator[TestServer]:
    server = await _scheduler(certificates.node)
    assert server.scheme == "https"
    yield server
    await server.close()


def plain_url(server: TestServer) -> str:
    """The scheduler as a config file that predates TLS names it: http://. With a tls
    block the peer must reach it over https anyway."""
    return f"http://127.0.0.1:{server.port}"


PeerFactory = Callable[..., Awaitable[PeerDaemon]]


@pytest.fixture
async def start_peer(
    tmp_path: Path, registry: RegistryProcess, counting_proxy: CountingProxy
) -> AsyncIterator[PeerFactory]:
    daemons: list[PeerDaemon] = []

    async def start(
        name: str, scheduler: str, tls: TLSSettings | None, **settings: Any
    ) -> PeerDaemon:
        config = PeerConfig(
            listen="127.0.0.1:0",
            piece_listen="127.0.0.1:0",
            data_dir=str(tmp_path / name),
            host_id=name,
            token=TOKEN,
            scheduler=scheduler,
            tls=tls,
            upstream=UpstreamConfig(
                default_registry=registry.host,
                insecure_registries=(registry.host,),
                endpoints={registry.host: counting_proxy.url},
            ),
            **settings,
        )
        daemon = PeerDaemon(config)
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.stop()


async def _image(registry: RegistryProcess, tmp_path: Path, sizes: list[int]) -> PushedImage:
    return await push_image_async(
        registry.url, "tls/app", "v1", sizes, seed=17, work_dir=tmp_path / "image"
    )


async def _pull(peer: PeerDaemon, image: PushedImage) -> dict[str, str]:
    """Every blob through the peer's plain-HTTP mirror: digest -> sha256 of the body."""
    got = {}
    async with aiohttp.ClientSession() as session:
        for digest in image.blob_digests:
            url = str(peer.make_url(f"/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"))
            assert url.startswith("http://127.0.0.1:")
            async with session.get(url) as resp:
                assert resp.status == 200, await resp.text()
                got[digest] = "sha256:" + hashlib.sha256(await resp.read()).hexdigest()
    return got


def _bytes_from(peer: PeerDaemon, source: str) -> float:
    return float(peer.metrics.download_bytes.labels(source)._value.get())


async def _wait_idle(peers: list[PeerDaemon]) -> None:
    await asyncio.to_thread(
        wait_until, lambda: all(p.engine.active_tasks == 0 for p in peers), 10, "tasks to end"
    )


async def _plain_http_answer(port: int) -> bytes:
    """What a plain-HTTP client gets from ``port``: everything it reads until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


async def _https_status(url: str, context: ssl.SSLContext) -> int:
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        return resp.status


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_swarm_pulls_over_tls_and_its_ports_refuse_plain_http(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    certificates: Certificates,
    tls_scheduler: TestServer,
    start_peer: PeerFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    image = await _image(registry, tmp_path, [12 * MiB, 3 * MiB])
    tls = certificates.node
    seed = await start_peer("seed", plain_url(tls_scheduler), tls, seed=True)
    peers = [await start_peer(f"peer{i}", plain_url(tls_scheduler), tls) for i in range(3)]
    assert await _pull(seed, image) == {d: d for d in image.blob_digests}
    results = await asyncio.gather(*(_pull(p, image) for p in peers))
    for got in results:
        assert got == {d: d for d in image.blob_digests}
    await _wait_idle([seed, *peers])

    # Pieces went peer to peer (so over TLS): the registry sent the image about once.
    assert counting_proxy.total_blob_bytes <= 1.1 * image.total_blob_bytes
    from_swarm = sum(_bytes_from(p, "peer") + _bytes_from(p, "seed") for p in peers)
    assert from_swarm >= 0.8 * 3 * image.total_blob_bytes, from_swarm
    # The peers talked to the scheduler over https although configured with http://.
    assert all(p._swarm and p._swarm.scheduler.base_url.startswith("https://") for p in peers)

    # The piece server and the scheduler speak TLS only: a plain-HTTP client has its
    # connection closed without an answer, and nothing is logged as an error.
    client = tls.client_context()
    for port in (seed.piece_port, tls_scheduler.port):
        assert await _plain_http_answer(port) == b""
    assert await _https_status(f"https://127.0.0.1:{seed.piece_port}/healthz", client) == 200
    assert await _https_status(str(tls_scheduler.make_url("/healthz")), client) == 200
    # A client trusting another CA is refused by the certificate check.
    stranger = TLSSettings(**certificates.other.issue("stranger").block()).client_context()
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _https_status(f"https://127.0.0.1:{seed.piece_port}/healthz", stranger)
    assert _tracebacks(caplog) == []


async def test_a_parent_whose_certificate_is_refused_counts_as_failed(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    certificates: Certificates,
    tls_scheduler: TestServer,
    start_peer: PeerFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    image = await _image(registry, tmp_path, [8 * MiB])
    # The rogue holds a certificate of another CA; it trusts both CAs, so it reaches
    # the scheduler. The child trusts the cluster CA only.
    both = bundle(tmp_path / "both.crt", certificates.ca, certificates.other)
    rogue_tls = TLSSettings(**certificates.other.issue("rogue", ca_file=both).block())
    rogue = await start_peer("rogue", plain_url(tls_scheduler), rogue_tls, seed=True)
    assert await _pull(rogue, image) == {d: d for d in image.blob_digests}
    await _wait_idle([rogue])
    child = await start_peer("child", plain_url(tls_scheduler), certificates.node)

    assert await _pull(child, image) == {d: d for d in image.blob_digests}

    # Nothing came from the rogue; the child gave up on it and went to the registry.
    assert _bytes_from(child, "seed") + _bytes_from(child, "peer") == 0
    assert _bytes_from(child, "origin") == image.total_blob_bytes
    assert child.metrics.parent_failures.labels("unreachable")._value.get() >= 1
    assert rogue.metrics.upload_bytes._value.get() == 0
    # One clear line says why, naming the parent; no traceback.
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "peer.parent_client" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert f"https://127.0.0.1:{rogue.piece_port} (host rogue) cannot be used" in warnings[0]
    assert "not accepted by tls.ca_file (unable to get local issuer certificate)" in warnings[0]
    assert _tracebacks(caplog) == []


async def test_a_tls_scheduler_serves_registrations_and_decisions_over_tls(
    certificates: Certificates, tls_scheduler: TestServer
) -> None:
    tls = certificates.node
    client = SchedulerClient(plain_url(tls_scheduler), TOKEN, tls.client_context())
    digest = "sha256:" + "ab" * 32
    try:
        assert client.base_url == f"https://127.0.0.1:{tls_scheduler.port}"
        for host in ("holder", "fetcher"):
            ttl_s, _ = await client.announce(host_announcement(host))
            assert ttl_s > 0
        await client.register(
            "holder_p", digest, "holder", 8 * MiB, 4 * MiB, range(2), ["sha256:" + "01" * 32] * 2
        )
        decision = await client.register("fetcher_p", digest, "fetcher", 8 * MiB, 4 * MiB, [])
        assert isinstance(decision, UseParents)
        assert [p.host_id for p in decision.parents] == ["holder"]
        # The parent's piece server is reached over https too.
        assert decision.parents[0].url("https") == "https://127.0.0.1:65002"
    finally:
        await client.close()


async def test_scheduler_clients_that_cannot_do_tls_with_it_fail_clearly(
    certificates: Certificates, tls_scheduler: TestServer
) -> None:
    stranger = TLSSettings(**certificates.other.issue("stranger").block()).client_context()
    https = f"https://127.0.0.1:{tls_scheduler.port}"
    cases: list[tuple[SchedulerClient, str]] = [
        (
            SchedulerClient(plain_url(tls_scheduler), TOKEN, stranger),
            f"TLS: the certificate of 127.0.0.1:{tls_scheduler.port} is not accepted by "
            "tls.ca_file (unable to get local issuer certificate)",
        ),
        # A peer without the tls block, given an https URL: the system's CAs refuse it.
        (SchedulerClient(https, TOKEN), "is not accepted by the system's CAs"),
        # A peer without the tls block, given the http URL: the port closes at once.
        (SchedulerClient(plain_url(tls_scheduler), TOKEN), "Server disconnected"),
    ]
    try:
        for client, message in cases:
            with pytest.raises(SchedulerUnavailable) as caught:
                await asyncio.wait_for(client.announce(host_announcement("h")), 10)
            assert message in str(caught.value)
    finally:
        for client, _ in cases:
            await client.close()


async def test_a_tls_peer_with_a_plain_scheduler_says_so_and_pulls_from_the_registry(
    registry: RegistryProcess,
    certificates: Certificates,
    start_peer: PeerFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image = await _image(registry, tmp_path, [2 * MiB])
    plain = await _scheduler(None)
    port = plain.port
    try:
        peer = await start_peer("peer", plain_url(plain), certificates.node)
        assert await _pull(peer, image) == {d: d for d in image.blob_digests}
        assert _bytes_from(peer, "origin") == image.total_blob_bytes
        assert peer.metrics.scheduler_unavailable._value.get() >= 1
    finally:
        await plain.close()
    assert any(
        f"TLS handshake with 127.0.0.1:{port} failed" in r.getMessage()
        and "does it serve TLS" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    ), [r.getMessage() for r in caplog.records]
