"""Assembling and running the peer daemon: mirror, piece server, engine, scheduler link."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from peer.admin import PeerAdmin
from peer.config import PeerConfig
from peer.engine import Engine, SwarmClients, peer_id_for
from peer.metrics import PeerMetrics
from peer.parent_client import ParentClient
from peer.piece_server import UploadLimiter, create_piece_app
from peer.scheduler_client import (
    HostAnnouncement,
    SchedulerClient,
    SchedulerRejected,
    SchedulerUnavailable,
)
from peer.serve import ENGINE_KEY, serve_blob
from peer.storage import BlobStore
from registry_proxy.mirror import UPSTREAM_CLIENT_KEY, create_mirror_app
from registry_proxy.upstream import UpstreamClient

log = logging.getLogger(__name__)

SCHEDULER_DOWN_RETRY_S = 1.0
FIRST_ANNOUNCE_TIMEOUT_S = 3.0
# On SIGTERM, how long uploads already under way may take to finish: well inside
# Kubernetes' default 30 s grace period and systemd's 90 s stop timeout.
SHUTDOWN_GRACE_S = 10.0
# After that, how long a server waits for a request still being handled before it
# cancels it (aiohttp's default is 60 s, which would outlast any grace period).
HANDLER_SHUTDOWN_TIMEOUT_S = 1.0


class PeerDaemon:
    """Everything one node runs; ``start`` binds the ports (0 picks free ones)."""

    def __init__(self, config: PeerConfig, shutdown_grace_s: float = SHUTDOWN_GRACE_S) -> None:
        self.config = config
        self.shutdown_grace_s = shutdown_grace_s
        self.metrics = PeerMetrics()
        self.limiter = UploadLimiter(config.upload_slot_count, config.upload_rate_bps)
        self._runners: list[web.AppRunner] = []
        self._announcer: asyncio.Task[None] | None = None
        self._client: UpstreamClient | None = None
        self._swarm: SwarmClients | None = None
        self._engine: Engine | None = None
        self.mirror_port = 0
        self.piece_port = 0
        self._stopped = False

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "daemon not started"
        return self._engine

    @property
    def mirror_url(self) -> str:
        return f"http://{self.config.listen_host}:{self.mirror_port}"

    def make_url(self, path: str) -> URL:
        return URL(self.mirror_url + path)

    async def start(self) -> None:
        config = self.config
        self._client = UpstreamClient(config.upstream)
        # TLS covers what other machines reach (the piece server) and what this peer
        # calls (parents, the scheduler); the mirror stays plain HTTP for containerd.
        client_ssl = config.tls.client_context() if config.tls is not None else None
        if config.scheduler:
            read_timeout_s = config.upstream.read_timeout_s
            connect_timeout_s = config.upstream.connect_timeout_s
            self._swarm = SwarmClients(
                SchedulerClient(config.scheduler, config.token, client_ssl),
                ParentClient(config.token, connect_timeout_s, read_timeout_s, client_ssl),
            )
        self._engine = Engine(
            config, BlobStore(config.data_dir), self._client, self.metrics, self._swarm
        )
        self._engine.load()
        if self._swarm is not None:
            await self._forget_earlier_run(self._swarm.scheduler)
        admin = PeerAdmin(self._engine, self._client, config.token, self._swarm)
        mirror = self._mirror_app()
        admin.add_routes(mirror)
        self.mirror_port = await self._serve(mirror, config.listen_host, config.listen_port)
        if self._swarm is not None:
            pieces = create_piece_app(self._engine, config.token, self.limiter)
            admin.add_routes(pieces)
            server_ssl = config.tls.server_context() if config.tls is not None else None
            self.piece_port = await self._serve(
                pieces, config.piece_host, config.piece_port, server_ssl
            )
            self._announcer = asyncio.create_task(self._announce_loop())
        log.info(
            "p2p-peer %s: mirror on %s, %s (data dir %s, cache quota %d bytes)",
            config.host_id,
            self.mirror_url,
            f"pieces on port {self.piece_port}, scheduler {self._swarm.scheduler.base_url}"
            + (" over TLS" if config.tls is not None else "")
            + (" (seed)" if config.seed else "")
            if self._swarm
            else "no scheduler: a caching mirror on its own",
            config.data_dir,
            config.cache_quota_bytes,
        )

    async def stop(self) -> None:
        """Leave gracefully and close everything; calling it again does nothing.

        The piece server refuses new requests (503) and the scheduler is told this host
        leaves, so it hands our children other parents; uploads under way get up to
        ``shutdown_grace_s`` to finish. Then downloads are cancelled and servers closed.
        """
        if self._stopped:
            return
        self._stopped = True
        self.limiter.close()
        if self._engine is not None:
            await self._engine.wake_waiters()  # long-polled piece lists answer 503 now
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
        if self._swarm is not None:
            with contextlib.suppress(SchedulerUnavailable, SchedulerRejected):
                await self._swarm.scheduler.leave_host(self.config.host_id)
        if self.limiter.active:
            log.info(
                "waiting up to %.0fs for %d uploads", self.shutdown_grace_s, self.limiter.active
            )
            if await self.limiter.wait_idle(self.shutdown_grace_s):
                log.info("uploads finished")
            else:
                log.warning("cutting off %d uploads still running", self.limiter.active)
        if self._engine is not None:
            await self._engine.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._swarm is not None:
            await self._swarm.scheduler.close()
            await self._swarm.parents.close()
        if self._client is not None:
            await self._client.close()

    async def _serve(
        self, app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=HANDLER_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._runners.append(runner)
        return int(runner.addresses[-1][1])  # the bound port, also when asked for port 0

    def _mirror_app(self) -> web.Application:
        engine, metrics = self.engine, self.metrics
        app = create_mirror_app(self.config.upstream, serve_blob)
        assert self._client is not None
        app[UPSTREAM_CLIENT_KEY] = self._client
        app[ENGINE_KEY] = engine

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "status": "ok",
                    "host_id": self.config.host_id,
                    "tasks_active": engine.active_tasks,
                    "cache_blobs": len(engine.index),
                    "cache_bytes": engine.index.blob_bytes,
                    "cache_quota_bytes": engine.index.quota_bytes,
                    "piece_port": self.piece_port,
                }
            )

        async def metrics_endpoint(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(metrics.registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics_endpoint)
        return app

    def _announcement(self) -> HostAnnouncement:
        config = self.config
        address = config.advertise_address or config.piece_host
        if address in ("0.0.0.0", "::", ""):
            address = "127.0.0.1"
        return HostAnnouncement(
            host_id=config.host_id,
            address=address,
            piece_port=config.advertise_port or self.piece_port,
            upload_capacity_bps=config.upload_capacity_bps,
            download_capacity_bps=config.download_capacity_bps,
            upload_slots=config.upload_slot_count,
            is_seed=config.seed,
            idc=config.idc,
            rack=config.rack,
            location=config.location,
            upload_count=self.limiter.active,
            upload_bps=0.0,
        )

    async def _announce_loop(self) -> None:
        """Keep the host alive at the scheduler; re-register what we hold when it returns."""
        assert self._swarm is not None
        scheduler = self._swarm.scheduler
        was_up = False
        while True:
            try:
                ttl_s, new_host = await scheduler.announce(self._announcement())
                if new_host or not was_up:
                    # A new host to the scheduler (first contact, or it restarted and lost
                    # its state): tell it what we hold, so others can fetch from us.
                    log.info("scheduler %s reachable; registering cached blobs", scheduler.base_url)
                    await self._reregister(scheduler)
                    was_up = True
                delay_s = min(self.config.announce_interval_s, ttl_s / 3)
            except (SchedulerUnavailable, SchedulerRejected) as exc:
                if was_up:
                    log.warning("scheduler unreachable (%s); pulls go to the registry", exc)
                was_up = False
                delay_s = SCHEDULER_DOWN_RETRY_S
            # A replica found down ends the wait: tasks it owned need what we hold.
            await scheduler.wait_for_change(delay_s)

    async def _forget_earlier_run(self, scheduler: SchedulerClient) -> None:
        """Make the scheduler forget what an earlier run of this host told it.

        A daemon that was killed never said goodbye: the scheduler still counts on the
        pieces its downloads reported, though only the verified prefix of each survives a
        restart, and registering the same peer again only adds pieces. It would then hand
        this peer no parent for pieces it believes are here. Leaving first clears that;
        the announce loop then registers what really is here.
        """
        with contextlib.suppress(SchedulerUnavailable, SchedulerRejected, TimeoutError):
            await asyncio.wait_for(
                scheduler.leave_host(self.config.host_id), FIRST_ANNOUNCE_TIMEOUT_S
            )

    async def _reregister(self, scheduler: SchedulerClient) -> None:
        engine = self.engine
        for digest in engine.index.digests():
            meta = engine.blob_meta(digest)
            if meta is None:
                continue
            count = -(-meta.size_bytes // meta.piece_bytes)
            with contextlib.suppress(SchedulerRejected):
                await scheduler.register(
                    peer_id_for(self.config.host_id, digest),
                    digest,
                    self.config.host_id,
                    meta.size_bytes,
                    meta.piece_bytes,
                    range(count),
                    meta.piece_digests if len(meta.piece_digests) == count else None,
                )


async def run(config: PeerConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    daemon = PeerDaemon(config)
    await daemon.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("p2p-peer: shutting down")
        await daemon.stop()
