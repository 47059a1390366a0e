"""The piece server: other peers fetch pieces of the blobs this peer holds.

``GET /api/v1/tasks/<digest>/pieces`` lists the pieces present. A child follows it while
this peer is still downloading with ``?stream=1``: one response that goes on, a line of
JSON per change (``_stream_list``). Or by long polling: with ``?known=K&wait=S`` the
answer waits until this peer holds other than ``K`` pieces (or finished, or is closing),
at most ``S`` seconds. Either way the child hears of a new piece at once without asking
four times a second. A seed's list depends on time as well (``peer.seed_offer``): it
answers at once, with a plain list even when asked for a stream.

``GET /api/v1/tasks/<digest>/pieces/<n>`` sends one piece with ``sendfile`` straight
from the task or blob file, with its digest in ``X-Piece-Digest``. Only recorded
pieces are ever offered. Uploads are bounded in number (a full server answers 503 at
once, so the child asks another parent) and, optionally, in rate. With a cluster token
configured every piece request must carry it. A peer shutting down answers every piece
and piece-list request with 503 while the uploads already under way finish
(:meth:`UploadLimiter.close`), and ends its piece-list streams. A seed peer lists and
serves a piece only when ``peer.seed_offer`` allows: not while it sends that piece to
someone else, nor just after, so its upload goes to new pieces.

``/metrics`` (Prometheus) and ``/healthz`` need no token: the piece server is the port
other machines reach, so it is where Prometheus scrapes a peer whose registry mirror
listens on loopback only.

With the peer's ``tls`` block the daemon serves this app over HTTPS only
(``peer.daemon``): a client speaking plain HTTP has its connection closed at the
handshake. Pieces then go out through asyncio's read-and-write fallback of ``sendfile``,
since the kernel cannot encrypt what it copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from peer.engine import Engine
from peer.parent_client import STREAM_CONTENT_TYPE
from peer.pieces import PieceLayout
from peer.scheduler_client import SchedulerClient, SchedulerRejected, SchedulerUnavailable
from peer.seed_offer import SeedOffer, SeedOffers
from peer.task import TaskState
from registry_proxy.errors import ProtocolError
from registry_proxy.reference import parse_digest

log = logging.getLogger(__name__)

RATE_CHUNK_BYTES = 256 * 1024
# The longest a piece list may be held for a long poll: a child's list timeout is the
# wait it asked for plus a few seconds, so a frozen parent is still noticed in time.
MAX_LIST_WAIT_S = 10.0
# A streamed piece list (``?stream=1``, see ``_stream_list``): the least time between two
# lines, and the longest without one. Each line costs a few hundred microseconds of
# Python on both peers where an HTTP exchange costs milliseconds, so lines can come
# oftener than long polls did; the heartbeat stays well inside the child's read timeout.
STREAM_GAP_S = 0.25
STREAM_HEARTBEAT_S = 2.0
PIECE_ENGINE_KEY = web.AppKey("piece_engine", Engine)


class UploadLimiter:
    """At most ``slots`` uploads at once, and at most ``rate_bps`` bytes per second.

    Once closed (the peer is shutting down) it admits no new upload, and
    :meth:`wait_idle` waits for the ones in flight.
    """

    def __init__(self, slots: int, rate_bps: float) -> None:
        self.slots = slots
        self.active = 0
        self.rate_bps = rate_bps
        self.closed = False
        self._allowance_s = 0.0  # when the token bucket next has room
        self._idle: asyncio.Event | None = None

    def try_acquire(self) -> bool:
        if self.active >= self.slots:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    def close(self) -> None:
        """Admit no new upload from now on; the ones in flight carry on."""
        self.closed = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no upload is in flight, at most ``timeout_s``; True if none is."""
        if self.active > 0:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self.active == 0

    async def pace(self, size_bytes: int) -> None:
        """Sleep so that uploads together stay under the rate cap."""
        if self.rate_bps <= 0:
            return
        now = time.monotonic()
        start = max(now, self._allowance_s)
        self._allowance_s = start + size_bytes / self.rate_bps
        if start > now:
            await asyncio.sleep(start - now)


def create_piece_app(engine: Engine, token: str | None, limiter: UploadLimiter) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[PIECE_ENGINE_KEY] = engine
    metrics = engine.metrics
    # Only a seed rations its pieces (peer.seed_offer); a normal peer offers all it has.
    seed_offers = SeedOffers() if engine.config.seed else None
    spread_tasks: set[asyncio.Task[None]] = set()

    async def stop_spread_refreshes(app: web.Application) -> None:
        for task in list(spread_tasks):
            task.cancel()
        await asyncio.gather(*spread_tasks, return_exceptions=True)

    app.on_cleanup.append(stop_spread_refreshes)

    def offer_for(digest: str, now: float) -> SeedOffer:
        """The seed's offer for a blob, asking the scheduler what the swarm holds now and
        then (in the background: a piece request never waits for the scheduler)."""
        assert seed_offers is not None
        offer = seed_offers.get(digest)
        scheduler = engine.scheduler
        if scheduler is not None and offer.spread_due(now):
            task = asyncio.create_task(_refresh_spread(scheduler, digest, offer))
            spread_tasks.add(task)
            task.add_done_callback(spread_tasks.discard)
        return offer

    def authorize(request: web.Request) -> None:
        if token is None:
            return
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise web.HTTPUnauthorized(
                text='{"error": "missing or wrong cluster token"}', content_type="application/json"
            )

    def refuse_when_closing() -> None:
        if limiter.closed:
            # The child lists pieces elsewhere; the scheduler has been told we leave.
            raise web.HTTPServiceUnavailable(
                text='{"error": "this peer is shutting down"}', content_type="application/json"
            )

    async def piece_list(request: web.Request) -> web.StreamResponse:
        authorize(request)
        refuse_when_closing()
        digest = str(parse_digest(request.match_info["digest"]))
        known, wait_s = _long_poll(request)
        held = _held(engine, digest)
        running = engine.running(digest)
        if (
            request.query.get("stream") == "1"
            and held is not None
            and not held[2]
            and seed_offers is None
            and running is not None
        ):
            metrics.piece_lists.labels("stream").inc()
            return await _stream_list(request, engine, digest, held, lambda: limiter.closed)
        if (
            held is not None
            and known == len(held[1])
            and wait_s > 0
            and seed_offers is None
            and running is not None
        ):
            metrics.piece_lists.labels("long_poll").inc()
            await running.wait_for_change(known, wait_s, lambda: limiter.closed)
            refuse_when_closing()
            held = _held(engine, digest)
        else:
            metrics.piece_lists.labels("at_once").inc()
        if held is None:
            raise web.HTTPNotFound(
                text='{"error": "no such task here"}', content_type="application/json"
            )
        layout, pieces, complete = held
        if seed_offers is not None:
            now = time.monotonic()
            pieces = offer_for(digest, now).offered(pieces, now)
        return web.json_response(_list_body(layout, pieces, complete, engine.config.seed))

    async def piece(request: web.Request) -> web.StreamResponse:
        authorize(request)
        refuse_when_closing()
        digest = str(parse_digest(request.match_info["digest"]))
        try:
            index = int(request.match_info["index"])
        except ValueError:
            raise web.HTTPBadRequest(
                text='{"error": "piece index must be an integer"}', content_type="application/json"
            ) from None
        found = _open_piece(engine, digest, index)
        if found is None:
            raise web.HTTPNotFound(
                text='{"error": "piece not here"}', content_type="application/json"
            )
        fd, layout, piece_digest = found
        with os.fdopen(fd, "rb", buffering=0) as file:
            if not limiter.try_acquire():
                metrics.upload_rejected.inc()
                raise web.HTTPServiceUnavailable(
                    text='{"error": "no free upload slot"}', content_type="application/json"
                )
            offer = offer_for(digest, time.monotonic()) if seed_offers is not None else None
            if offer is not None and not offer.claim(index, time.monotonic()):
                limiter.release()
                metrics.upload_rejected.inc()
                raise web.HTTPServiceUnavailable(
                    text='{"error": "this seed just sent that piece; fetch it from a peer"}',
                    content_type="application/json",
                )
            metrics.uploads_active.set(limiter.active)
            sent = False
            try:
                response, sent = await _send_piece(
                    request, file, layout, index, piece_digest, limiter, engine
                )
                return response
            finally:
                if offer is not None:
                    offer.release(index, time.monotonic(), sent)
                limiter.release()
                metrics.uploads_active.set(limiter.active)

    async def healthz(request: web.Request) -> web.Response:
        status = "shutting_down" if limiter.closed else "ok"
        return web.json_response({"status": status, "uploads_active": limiter.active})

    async def metrics_endpoint(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/api/v1/tasks/{digest}/pieces", piece_list)
    app.router.add_get("/api/v1/tasks/{digest}/pieces/{index}", piece)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def _stream_list(
    request: web.Request,
    engine: Engine,
    digest: str,
    held: tuple[PieceLayout, list[int], bool],
    closing: Callable[[], bool],
) -> web.StreamResponse:
    """Follow a running task's piece list as newline-delimited JSON, one line per change.

    The first line is the whole list (as a plain answer has it); each later line holds
    only the pieces added since, and ``complete``. A line goes out at most every
    ``STREAM_GAP_S``, and an empty line after ``STREAM_HEARTBEAT_S`` without news, so
    the child can tell a quiet parent from a frozen one. The stream ends after the line
    that says ``complete``; it ends without one when the task is gone (failed, evicted)
    or this peer is closing, and the child then asks again the plain way.
    """
    response = web.StreamResponse(headers={"Content-Type": STREAM_CONTENT_TYPE})
    layout, pieces, complete = held
    sent = set(pieces)
    try:
        await response.prepare(request)
        await response.write(_json_line(_list_body(layout, pieces, complete, seed=False)))
        while not complete:
            written_at = time.monotonic()
            task = engine.running(digest)
            if task is not None:
                await task.wait_for_change(len(sent), STREAM_HEARTBEAT_S, closing)
            if closing() or (task is not None and task.state is TaskState.FAILED):
                break
            now = time.monotonic()
            if now - written_at < STREAM_GAP_S:
                await asyncio.sleep(written_at + STREAM_GAP_S - now)
            current = _held(engine, digest)
            if current is None:
                break  # the task is gone: the child asks again and hears so
            _, pieces, complete = current
            added = [index for index in pieces if index not in sent]
            sent.update(added)
            if added or complete:
                await response.write(_json_line({"pieces": added, "complete": complete}))
            else:
                await response.write(b"\n")
        await response.write_eof()
    except ConnectionError:
        pass  # the child went away (dropped this parent, or finished): nothing to tell
    return response


def _list_body(
    layout: PieceLayout, pieces: list[int], complete: bool, seed: bool
) -> dict[str, object]:
    """A piece list as a plain answer and a stream's first line carry it."""
    return {
        "size_bytes": layout.total_bytes,
        "piece_bytes": layout.piece_bytes,
        "complete": complete,
        "pieces": pieces,
        "seed": seed,
    }


def _json_line(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


async def _refresh_spread(scheduler: SchedulerClient, digest: str, offer: SeedOffer) -> None:
    try:
        offer.set_spread(await scheduler.task_spread(digest))
    except (SchedulerUnavailable, SchedulerRejected) as exc:
        # Without the scheduler's word the seed rations by time alone.
        offer.set_spread([])
        log.debug("%s: no spread from the scheduler: %s", digest, exc)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)


def _long_poll(request: web.Request) -> tuple[int | None, float]:
    """``known`` and ``wait`` of a piece-list request: (None, 0.0) when not given."""
    query = request.query
    try:
        known = int(query["known"]) if "known" in query else None
        wait_s = float(query.get("wait", "0"))
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "known must be an integer and wait a number of seconds"}',
            content_type="application/json",
        ) from None
    if (known is not None and known < 0) or not 0 <= wait_s <= MAX_LIST_WAIT_S:
        raise web.HTTPBadRequest(
            text=f'{{"error": "known must be >= 0 and wait within 0..{MAX_LIST_WAIT_S:g} s"}}',
            content_type="application/json",
        )
    return known, wait_s


def _held(engine: Engine, digest: str) -> tuple[PieceLayout, list[int], bool] | None:
    meta = engine.blob_meta(digest)
    if meta is not None:
        layout = PieceLayout(meta.size_bytes, meta.piece_bytes)
        return layout, list(range(layout.count)), True
    task = engine.running(digest)
    if task is not None:
        return task.layout, task.present_pieces(), False
    return None


def _open_piece(engine: Engine, digest: str, index: int) -> tuple[int, PieceLayout, str] | None:
    """A descriptor positioned nowhere in particular, the layout and the piece digest."""
    task = engine.running(digest)
    if task is not None:
        piece_digest = task.piece_digest(index) if 0 <= index < task.layout.count else None
        if piece_digest is None:
            return None
        return task.dup_fd(), task.layout, piece_digest
    meta = engine.blob_meta(digest)
    if meta is None:
        return None
    layout = PieceLayout(meta.size_bytes, meta.piece_bytes)
    if not 0 <= index < layout.count or index >= len(meta.piece_digests):
        return None
    try:
        fd = engine.open_complete(digest)
    except OSError:
        return None  # evicted a moment ago
    return fd, layout, meta.piece_digests[index]


async def _send_piece(
    request: web.Request,
    file: io.FileIO,
    layout: PieceLayout,
    index: int,
    piece_digest: str,
    limiter: UploadLimiter,
    engine: Engine,
) -> tuple[web.StreamResponse, bool]:
    """Send one piece; the flag says whether every byte went out."""
    start, size = layout.start(index), layout.size(index)
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "X-Piece-Digest": piece_digest}
    )
    response.content_length = size
    await response.prepare(request)
    transport = request.transport
    loop = asyncio.get_running_loop()
    sent = 0
    step = size if limiter.rate_bps <= 0 else RATE_CHUNK_BYTES
    while sent < size:
        count = min(step, size - sent)
        await limiter.pace(count)
        if transport is None or transport.is_closing():
            return response, False
        with contextlib.suppress(ConnectionError):
            await loop.sendfile(transport, file, start + sent, count)
        sent += count
        engine.metrics.upload_bytes.inc(count)
    await response.write_eof()
    return response, transport is not None and not transport.is_closing()
