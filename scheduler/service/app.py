"""Assembling and running the scheduler: routes, errors as JSON, the token, the writer.

Every error leaves as JSON ``{"error": message, "field": name}`` (``field`` only when one
field is to blame), whatever raised it: a refused field, an unknown peer, a conflict with
the state, a route that does not exist. Clients never have to parse an HTML error page.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cluster_tls import with_scheme
from scheduler.core import (
    ConflictError,
    DigestConflictError,
    InvalidEventError,
    PeerStateError,
    SchedulerState,
    UnknownHostError,
    UnknownPeerError,
)
from scheduler.core.transfers import TransferRecorder
from scheduler.service import auth, openapi
from scheduler.service.api import MAX_BODY_BYTES, SchedulerApi
from scheduler.service.config import SchedulerConfig
from scheduler.service.errors import ProtocolError, WriterStoppedError
from scheduler.service.metrics import SchedulerMetrics
from scheduler.service.models import ModelServing, ModelSettings
from scheduler.service.records import RecordFlusher
from scheduler.service.replicas import ReplicaDirectory
from scheduler.service.retraining import Retrainer
from scheduler.service.status import StatusPage
from scheduler.service.stores import open_stores
from scheduler.service.writer import StateWriter

log = logging.getLogger(__name__)

WRITER_KEY = web.AppKey("writer", StateWriter)
METRICS_KEY = web.AppKey("metrics", SchedulerMetrics)
REPLICAS_KEY = web.AppKey("replicas", ReplicaDirectory)
MODELS_KEY = web.AppKey("models", ModelServing)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, str] = {"error": message}
    if field is not None:
        body["field"] = field
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": auth.CHALLENGE}
    return web.json_response(body, status=status, headers=headers)


def _error_for(request: web.Request, exc: Exception) -> web.Response | None:
    """The JSON answer for an expected error, or None for a bug."""
    match exc:
        case ProtocolError():
            return error_response(exc.status, exc.message, exc.field)
        case InvalidEventError():
            return error_response(400, str(exc), exc.field)
        case UnknownPeerError() | UnknownHostError():
            return error_response(404, str(exc))
        case DigestConflictError():
            return error_response(409, str(exc), exc.field)
        case ConflictError() | PeerStateError():
            return error_response(409, str(exc))
        case WriterStoppedError():
            return error_response(503, str(exc))
        case web.HTTPException() if exc.status >= 400:
            # Raised by aiohttp itself: no such route (404), wrong method (405). A 405 must
            # say which methods the resource has (RFC 9110, section 15.5.6).
            allow = exc.headers.get(hdrs.ALLOW)
            return error_response(
                exc.status,
                f"{exc.reason}: {request.method} {request.path}",
                headers={hdrs.ALLOW: allow} if allow is not None else None,
            )
    return None


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def create_app(
    config: SchedulerConfig, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The scheduler's HTTP app; the writer starts and stops with it.

    ``clock`` is the time the core sees (``now`` of every operation); a replay of a
    simulated run passes the simulated time (tests/integration/test_sim_service_parity.py).
    """
    metrics = SchedulerMetrics(lambda: writer.counts)
    # Records, published models, the retraining lease: files and/or Redis (stores.py).
    stores = open_stores(config)
    models = ModelServing(
        ModelSettings(
            config.evaluator,
            config.model_path,
            config.model_reload_s,
            config.exploration,
            config.scheduling.parents_per_decision,
        ),
        metrics.registry,
        # Exploration draws from its own stream, so it never shifts the writer's.
        random.Random(None if config.rng_seed is None else config.rng_seed + 1),
        stores.published,
    )
    recorder = TransferRecorder(config.records_cluster) if stores.records else None
    state = SchedulerState(config.core_settings, models.evaluator, recorder)
    writer = StateWriter(state, random.Random(config.rng_seed), clock)
    flusher = (
        RecordFlusher(
            writer,
            stores.records,
            config.records_flush_s,
            metrics.registry,
            config.records_backlog_max,
        )
        if stores.records
        else None
    )
    retrainer = (
        Retrainer(config, stores, models, metrics.registry)
        if config.retrain_interval_s is not None
        else None
    )
    replicas = ReplicaDirectory(config, metrics.registry)
    token = config.token

    @web.middleware
    async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Exception as exc:
            answer = _error_for(request, exc)
            if answer is None:
                if isinstance(exc, web.HTTPException):
                    raise  # redirects and the like: not errors
                log.exception("%s %s failed", request.method, request.path)
                answer = error_response(500, f"internal error: {exc.__class__.__name__}")
            response = answer
        if 400 <= response.status < 500:
            metrics.bad_requests.labels(_route_label(request), str(response.status)).inc()
        return response

    @web.middleware
    async def cluster_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            token is not None
            and auth.requires_token(request.path)
            and not auth.bearer_matches(request.headers.get("Authorization"), token)
        ):
            raise ProtocolError(401, "missing or wrong cluster token (Authorization: Bearer)")
        return await handler(request)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        if token is None:
            log.warning(
                "no cluster token configured: any client can use the API "
                "(set --token-file or STARLING_TOKEN)"
            )
        writer.start()
        upkeep = asyncio.create_task(_expire_hosts(writer, metrics, config.upkeep_interval_s))
        await models.start(writer)
        if flusher is not None:
            flusher.start()
        if retrainer is not None:
            retrainer.start(writer)
        yield
        if retrainer is not None:
            await retrainer.stop()
        await models.stop()
        if flusher is not None:
            await flusher.stop()
        await stores.close()
        # Out of the replica list first, so peers stop sending work here.
        await replicas.stop()
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        await writer.stop()

    async def healthz(request: web.Request) -> web.Response:
        counts = writer.counts
        return web.json_response(
            {"status": "ok", "hosts": counts.hosts, "peers": counts.peers, "tasks": counts.tasks}
        )

    async def metrics_endpoint(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def openapi_document(request: web.Request) -> web.Response:
        return web.json_response(openapi.DOCUMENT)

    app = web.Application(
        middlewares=[errors_as_json, cluster_token], client_max_size=MAX_BODY_BYTES
    )
    app[WRITER_KEY] = writer
    app[METRICS_KEY] = metrics
    app[REPLICAS_KEY] = replicas
    app[MODELS_KEY] = models
    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/api/v1/openapi.json", openapi_document)
    app.router.add_get("/api/v1/replicas", replicas.handle)
    SchedulerApi(writer, metrics, config.host_ttl_s).add_routes(app)
    StatusPage(writer, metrics, config.host_ttl_s).add_routes(app)
    return app


async def _expire_hosts(writer: StateWriter, metrics: SchedulerMetrics, interval_s: float) -> None:
    """Every ``interval_s``, expire hosts whose last announcement is older than the TTL."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            removal = await writer.submit(lambda state, now, rng: state.expire_stale_hosts(now))
        except Exception:
            # A bug here must not end expiry for the life of the process.
            log.exception("host expiry failed; trying again in %g s", interval_s)
            continue
        for host_id in removal.removed_host_ids:
            metrics.events.labels("host_expired").inc()
            log.info("host %s expired: no announcement within the host TTL", host_id)
        if removal.removed_peer_ids:
            log.info("%d peers left with expired hosts", len(removal.removed_peer_ids))


def _own_url(config: SchedulerConfig, host: str, port: int) -> str:
    """The URL peers reach this replica at: ``advertise_url``, else the bound address
    (the hostname in place of a wildcard address); https when the API serves TLS."""
    if config.advertise_url:
        return with_scheme(config.advertise_url, config.tls is not None)
    if host in ("0.0.0.0", "::", ""):
        if config.redis_url:
            log.warning(
                "listening on a wildcard address without advertise_url: peers are told to "
                "reach this replica by its hostname, %s",
                socket.gethostname(),
            )
        host = socket.gethostname()
    scheme = "https" if config.tls is not None else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def run(config: SchedulerConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # With TLS, a client speaking plain HTTP to the port has its connection closed at
    # the handshake; nothing is logged above debug.
    ssl_context = config.tls.server_context() if config.tls is not None else None
    site = web.TCPSite(runner, config.listen_host, config.listen_port, ssl_context=ssl_context)
    await site.start()
    # Everything allocated so far (modules, the app: some 40,000 objects) lives as long
    # as the process. Out of the collector's reach, it is no longer scanned by every full
    # collection: with 1,000 peers registered a full collection then stalls every request
    # for under 1 ms instead of 15-20 ms (bench/sched_bench.py, bench/results/README.md).
    gc.freeze()
    # The bound address, not the configured one: with port 0 the kernel picked it.
    host, port = runner.addresses[0][:2]
    log.info(
        "p2p-scheduler: listening on %s://%s:%d (host TTL %g s, cluster token %s)",
        "https" if ssl_context is not None else "http",
        host,
        port,
        config.host_ttl_s,
        "required" if config.token else "not required",
    )
    # Only now is the port known: a replica registers in Redis once it can be reached.
    await app[REPLICAS_KEY].start(_own_url(config, host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("p2p-scheduler: shutting down")
        await runner.cleanup()
