"""A transparent reverse proxy that counts blob downloads and injects faults.

Put it between a client (containerd, a peer) and the registry to prove how many times
each blob was fetched from the origin, and to make the origin misbehave on demand.
Everything is passed through unchanged unless a fault switch is on: method, raw path and
query, repeated headers, streamed bodies in both directions, status and response headers
(Location, WWW-Authenticate, Docker-Content-Digest...). The client's Host header is kept,
so the registry builds upload Locations that point back at the proxy.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from .threaded_server import ThreadedServer

BLOB_PATH = re.compile(
    r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$"
)
STREAM_CHUNK_BYTES = 64 * 1024

# Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the message;
# aiohttp sets its own on each side. Content-Length is kept: it is end-to-end, and HEAD
# answers must carry the blob size.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str  # raw path and query as the client sent them
    status: int


def _end_to_end(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """Copy headers (repeats kept, order kept) without hop-by-hop ones."""
    items = list(headers.items())
    connection_tokens = {
        token.strip().lower()
        for name, value in items
        if name.lower() == "connection"
        for token in value.split(",")
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and lowered not in connection_tokens:
            out.add(name, value)
    return out


def _oci_error(status: int, message: str) -> web.Response:
    body = {"errors": [{"code": "UNKNOWN", "message": message, "detail": None}]}
    return web.json_response(body, status=status)


class CountingProxy:
    """Reverse proxy to ``upstream_url`` on 127.0.0.1:<ephemeral>.

    Counters cover ``GET /v2/<name>/blobs/<digest>`` only: ``blob_gets`` counts requests
    received (including ones answered by an injected failure), ``blob_bytes`` counts body
    bytes actually sent to clients. Fault switches are plain attributes the test may flip
    at any time; each request reads them once when it starts. They act per response: with
    Range requests, every range gets its own flipped middle byte, and ``stall_after_bytes``
    counts from the start of each response body. A stalled response hangs until
    ``release_stalls()`` or ``stop()``, then its connection is dropped.

    ``fail_blobs_with`` fails every blob GET, or only the next ``failures_left`` of them
    when that is set (a registry that has a bad moment, then heals). ``reset_after_bytes``
    ends each blob body with a TCP reset after that many bytes, for the next
    ``resets_left`` bodies if set. ``rate_bps`` paces every blob body (a slow registry).
    """

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        # Fault switches.
        self.corrupt_blobs: bool = False
        self.fail_blobs_with: int | None = None
        self.stall_after_bytes: int | None = None
        # Stall every blob body once this many bytes of that blob went out in all
        # requests together: "the registry dies after N bytes", deterministically.
        self.stall_after_blob_bytes: int | None = None
        self.failures_left: int | None = None
        self.reset_after_bytes: int | None = None
        self.resets_left: int | None = None
        self.rate_bps: float | None = None
        self.resets = 0  # blob bodies ended with a TCP reset so far

        self._lock = threading.Lock()
        self._blob_gets: defaultdict[str, int] = defaultdict(int)
        self._blob_bytes: defaultdict[str, int] = defaultdict(int)
        self._requests: list[ProxiedRequest] = []
        self._session: aiohttp.ClientSession | None = None
        # Loop-thread state: the event current stalls wait on; set for good on shutdown.
        self._release_stalls: asyncio.Event | None = None
        self._stopping = False

        app = web.Application()
        app.on_startup.append(self._on_startup)
        # on_shutdown runs before the server waits for open handlers, so stalled blob
        # streams are released first and stop() does not sit out the shutdown timeout.
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = ThreadedServer(app, name="counting-proxy")

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> CountingProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    async def _on_startup(self, app: web.Application) -> None:
        self._release_stalls = asyncio.Event()
        self._session = aiohttp.ClientSession(
            # No total timeout: big blobs stream for as long as they need.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            # Bytes pass through exactly as the registry encoded them.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stopping = True
        if self._release_stalls is not None:
            self._release_stalls.set()

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def release_stalls(self) -> None:
        """End the blob responses stalled right now (their connections are dropped).

        Later responses stall again while ``stall_after_bytes`` is set; set it to None
        first to let the origin heal.
        """
        self._server.loop.call_soon_threadsafe(self._release_current_stalls)

    def _release_current_stalls(self) -> None:
        released = self._release_stalls
        self._release_stalls = asyncio.Event()
        if released is not None:
            released.set()

    # -- counters ------------------------------------------------------------------

    @property
    def blob_gets(self) -> dict[str, int]:
        with self._lock:
            return dict(self._blob_gets)

    @property
    def blob_bytes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._blob_bytes)

    @property
    def total_blob_bytes(self) -> int:
        with self._lock:
            return sum(self._blob_bytes.values())

    @property
    def requests(self) -> list[ProxiedRequest]:
        """Every request answered so far, in completion order."""
        with self._lock:
            return list(self._requests)

    def reset_counts(self) -> None:
        with self._lock:
            self._blob_gets.clear()
            self._blob_bytes.clear()
            self._requests.clear()

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._requests.append(ProxiedRequest(method, path, status))

    # -- proxying --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        match = BLOB_PATH.match(request.path)
        digest = match.group("digest") if match and request.method == "GET" else None
        # Read each switch once so a test flipping it mid-response sees a clean boundary.
        fail_with = self.fail_blobs_with
        corrupt = self.corrupt_blobs
        stall_after = self.stall_after_bytes
        reset_after = self.reset_after_bytes
        rate_bps = self.rate_bps
        if digest is not None:
            with self._lock:
                self._blob_gets[digest] += 1
                if fail_with is not None and not self._spend("failures_left"):
                    fail_with = None
            if fail_with is not None:
                self._record(request.method, request.raw_path, fail_with)
                return _oci_error(fail_with, f"injected failure for {digest}")

        assert self._session is not None
        headers = _end_to_end(request.headers)
        data = request.content.iter_chunked(STREAM_CHUNK_BYTES) if request.can_read_body else None
        try:
            upstream = await self._session.request(
                request.method,
                URL(self.upstream_url + request.raw_path, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                # Send only what the client sent; aiohttp would add its own defaults.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        except aiohttp.ClientError as exc:
            self._record(request.method, request.raw_path, 502)
            return _oci_error(502, f"counting proxy: upstream unreachable: {exc}")

        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in _end_to_end(upstream.headers).items():
                response.headers.add(name, value)
            await response.prepare(request)
            counted = digest if upstream.status in (200, 206) else None
            length = upstream.content_length
            # The byte to flip: the middle of this response's body, whatever its range
            # (the first byte if the registry did not say how long the body is).
            flip_at = (length // 2 if length else 0) if corrupt and counted else None
            sent = 0
            started = time.monotonic()
            async for chunk in upstream.content.iter_chunked(STREAM_CHUNK_BYTES):
                if flip_at is not None and sent <= flip_at < sent + len(chunk):
                    i = flip_at - sent
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if (
                    counted
                    and reset_after is not None
                    and sent + len(chunk) >= reset_after
                    and self._spend_locked("resets_left")
                ):
                    await self._write(response, chunk[: max(0, reset_after - sent)], counted)
                    self._reset(request)
                    self._record(request.method, request.raw_path, upstream.status)
                    return response
                if counted and rate_bps:
                    # Pace the body: this chunk goes out once the rate allows it.
                    due = started + sent / rate_bps
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                limit = self._stall_limit(counted, stall_after, sent)
                if counted and limit is not None and len(chunk) >= limit:
                    await self._write(response, chunk[: max(0, limit)], counted)
                    await self._stall(request)
                    self._record(request.method, request.raw_path, upstream.status)
                    return response
                await self._write(response, chunk, counted)
                sent += len(chunk)
            await response.write_eof()
        self._record(request.method, request.raw_path, upstream.status)
        return response

    def _stall_limit(self, digest: str | None, stall_after: int | None, sent: int) -> int | None:
        """How many more bytes this body may send before it stalls (None: no limit)."""
        limits = []
        if stall_after is not None:
            limits.append(stall_after - sent)
        total_limit = self.stall_after_blob_bytes
        if digest is not None and total_limit is not None:
            with self._lock:
                limits.append(total_limit - self._blob_bytes[digest])
        return min(limits) if limits else None

    async def _write(self, response: web.StreamResponse, chunk: bytes, digest: str | None) -> None:
        if not chunk:
            return
        await response.write(chunk)
        if digest is not None:
            with self._lock:
                self._blob_bytes[digest] += len(chunk)

    def _spend(self, budget: str) -> bool:
        """Whether a fault whose budget (an attribute, None: unlimited) is ``budget`` may
        strike once more; uses one if so. The caller holds the lock."""
        left: int | None = getattr(self, budget)
        if left is None:
            return True
        if left <= 0:
            return False
        setattr(self, budget, left - 1)
        return True

    def _spend_locked(self, budget: str) -> bool:
        with self._lock:
            return self._spend(budget)

    def _reset(self, request: web.Request) -> None:
        """Drop the connection with a TCP reset (RST), as a crashing server or a
        middlebox does, rather than an orderly close."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        with self._lock:
            self.resets += 1

    async def _stall(self, request: web.Request) -> None:
        """Hang until released or stopped, then drop the connection mid-body."""
        assert self._release_stalls is not None
        if not self._stopping:
            await self._release_stalls.wait()
        if request.transport is not None:
            request.transport.abort()
