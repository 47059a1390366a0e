"""Assembling and running the peer daemon: the mirror, the engine, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from peer.config import PeerConfig
from peer.engine import Engine
from peer.metrics import PeerMetrics
from peer.serve import ENGINE_KEY, serve_blob
from peer.storage import BlobStore
from registry_proxy.mirror import UPSTREAM_CLIENT_KEY, create_mirror_app
from registry_proxy.upstream import UpstreamClient

log = logging.getLogger(__name__)


def create_app(config: PeerConfig) -> web.Application:
    """The daemon's HTTP app: the ``/v2/`` mirror, ``/healthz`` and ``/metrics``."""
    metrics = PeerMetrics()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        client = UpstreamClient(config.upstream)
        app[UPSTREAM_CLIENT_KEY] = client
        engine = Engine(config, BlobStore(config.data_dir), client, metrics)
        engine.load()
        app[ENGINE_KEY] = engine
        yield
        await engine.close()
        await client.close()

    async def healthz(request: web.Request) -> web.Response:
        engine = request.app[ENGINE_KEY]
        return web.json_response(
            {
                "status": "ok",
                "tasks_active": engine.active_tasks,
                "cache_blobs": len(engine.index),
                "cache_bytes": engine.index.blob_bytes,
                "cache_quota_bytes": engine.index.quota_bytes,
            }
        )

    async def metrics_endpoint(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = create_mirror_app(config.upstream, serve_blob)
    # Runs before the mirror's own context, so the mirror shares our upstream client.
    app.cleanup_ctx.insert(0, lifetime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def run(config: PeerConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port)
    await site.start()
    log.info(
        "p2p-peer: mirror listening on http://%s (data dir %s, cache quota %d bytes)",
        config.listen,
        config.data_dir,
        config.cache_quota_bytes,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("p2p-peer: shutting down")
        await runner.cleanup()
