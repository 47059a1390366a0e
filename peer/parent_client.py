"""Fetching pieces from parent peers' piece servers.

A parent can fail loudly (refused, reset, an error status) or silently: a frozen
process (SIGSTOP, a hung disk, a full-stop GC) keeps its sockets, the kernel still
accepts connections for it, and nothing ever answers. Silence is caught by timeouts
much shorter than the registry's: a piece list is a few hundred bytes a healthy parent
answers in milliseconds, and a parent sending a piece never goes quiet for seconds.
Both must be well under the mirror's stall timeout, so a child blocks a frozen parent
and moves on before its own client gives up on it.

With TLS (the peer's ``tls`` block) parents are fetched from over https and must show a
certificate from the cluster CA. A parent whose certificate is refused, or that does not
speak TLS, counts as unreachable (the conductor blocks it and the pieces come from
elsewhere), and the reason is logged as one line per parent, not once per piece.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from cluster_tls import describe_failure
from peer.origin import write_chunks
from peer.piece_hasher import SpanHasher
from peer.scheduler_client import ParentInfo

PIECE_READ_BYTES = 1024 * 1024
# See _ReadLowWater.
READ_LOW_WATER_BYTES = 128 * 1024
# The longest a piece list may take, and the longest a piece request may go without a
# byte (the headers, then between reads), before the parent counts as unreachable. A
# rate-capped parent pauses between chunks, but for well under a second; 5 s leaves room
# for several TCP retransmissions on a congested link, and a child still blocks a frozen
# parent within about 5-10 s, well inside the mirror's default 20 s stall timeout.
PIECE_LIST_TIMEOUT_S = 5.0
PIECE_STALL_TIMEOUT_S = 5.0
# The content type of a streamed piece list (``peer.piece_server``), one JSON per line.
STREAM_CONTENT_TYPE = "application/x-ndjson"
# A parent's TLS failure is logged at warning level at most this often; it repeats for
# every piece list and piece asked of it until the scheduler stops handing it out.
TLS_WARNING_INTERVAL_S = 60.0

log = logging.getLogger(__name__)


class ParentError(Exception):
    """A parent could not deliver; ``reason`` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PieceList:
    size_bytes: int
    piece_bytes: int
    complete: bool
    pieces: frozenset[int]
    seed: bool = False


class _ReadLowWater:
    """Wake the event loop for a piece body only once ``READ_LOW_WATER_BYTES`` are there.

    A parent's piece arrives a few segments at a time, and the event loop reads whatever
    has come each time the socket turns readable: 23 KiB per read on average in the
    cluster benchmark, each read costing a round of Python (the HTTP parser's callbacks,
    the stream's buffer, waking this task). ``SO_RCVLOWAT`` has the kernel report the
    socket readable only once that much is queued (or the peer closed it). It is set
    only while at least that much of the body is still to come, and back to 1 (the
    default) for the tail, so the last bytes are never held back, and it is 1 again
    before the connection can go back to the pool for other requests. Plain TCP only:
    under TLS, bytes already read but not yet decrypted would make "still to come" an
    overcount.
    """

    __slots__ = ("_content", "_low", "_size", "_sock")

    def __init__(self, resp: aiohttp.ClientResponse, size: int) -> None:
        connection = resp.connection
        transport = connection.transport if connection is not None else None
        self._sock = transport.get_extra_info("socket") if transport is not None else None
        self._content = resp.content
        self._size = size
        self._low = 1
        self.update()

    def update(self) -> None:
        """Set the mark from how much of the body has not been read from the socket."""
        to_come = self._size - self._content.total_bytes
        self._set(READ_LOW_WATER_BYTES if to_come >= READ_LOW_WATER_BYTES else 1)

    def reset(self) -> None:
        self._set(1)

    def _set(self, low: int) -> None:
        if low != self._low and self._sock is not None:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low)
            except OSError:
                self._sock = None  # a closed socket, say: the reads just stay small
                return
            self._low = low


def _piece_list(body: Any) -> PieceList:
    return PieceList(
        int(body["size_bytes"]),
        int(body["piece_bytes"]),
        bool(body["complete"]),
        frozenset(int(i) for i in body["pieces"]),
        bool(body.get("seed", False)),
    )


class ParentClient:
    def __init__(
        self,
        token: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._scheme = "https" if ssl_context is not None else "http"
        self._tls_warned: dict[str, float] = {}  # parent base URL -> when last logged
        self._list_timeout = aiohttp.ClientTimeout(
            total=min(read_timeout_s, PIECE_LIST_TIMEOUT_S), sock_connect=connect_timeout_s
        )
        # A stream has no end in sight, only a longest silence (the parent's heartbeat
        # comes every STREAM_HEARTBEAT_S).
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=PIECE_LIST_TIMEOUT_S
        )
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=connect_timeout_s,
                sock_read=min(read_timeout_s, PIECE_STALL_TIMEOUT_S),
            ),
            read_bufsize=4 * 1024 * 1024,
            connector=aiohttp.TCPConnector(limit=0, ssl=ssl_context or True),
        )
        self._lingering: set[asyncio.Future[Any]] = set()

    def linger(self, request: asyncio.Future[Any]) -> None:
        """Let a request nobody waits for any more finish on its own.

        Cancelling an HTTP request mid-way closes its connection, and the next request to
        that parent opens a new one. A long-polled piece list that is no longer wanted
        (its parent dropped, its task done) is answered within seconds anyway; letting it
        finish keeps the connection for reuse (in the cluster benchmark cancelled polls
        were two thirds of a peer's new connections). Closing the client cancels it."""
        self._lingering.add(request)
        request.add_done_callback(self._settled)

    @property
    def lingering(self) -> int:
        """Requests left to finish on their own (see :meth:`linger`)."""
        return len(self._lingering)

    def _settled(self, request: asyncio.Future[Any]) -> None:
        self._lingering.discard(request)
        if not request.cancelled():
            request.exception()  # nobody awaits it: consume its error, if any

    async def close(self) -> None:
        for request in list(self._lingering):
            request.cancel()
        await asyncio.gather(*self._lingering, return_exceptions=True)
        await self._session.close()

    async def piece_list(
        self, parent: ParentInfo, task_id: str, known: int | None = None, wait_s: float = 0.0
    ) -> PieceList:
        """The parent's piece list; with ``known``, a long poll: the parent answers when
        it holds other than ``known`` pieces, or after ``wait_s`` seconds."""
        url = f"{parent.url(self._scheme)}/api/v1/tasks/{task_id}/pieces"
        timeout = self._list_timeout
        if known is not None and wait_s > 0:
            url = f"{url}?known={known}&wait={wait_s:g}"
            assert timeout.total is not None
            timeout = aiohttp.ClientTimeout(
                total=timeout.total + wait_s, sock_connect=timeout.sock_connect
            )
        try:
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ParentError(f"status_{resp.status}", f"{url}: {resp.status}")
                return _piece_list(await resp.json())
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            raise self._unreachable(parent, url, exc) from exc

    async def stream_list(
        self, parent: ParentInfo, task_id: str, on_list: Callable[[PieceList], None]
    ) -> PieceList | None:
        """Follow the parent's piece list as a stream (``peer.piece_server``), calling
        ``on_list`` with the whole list so far at each change.

        None: the stream ran until the parent said its list is complete. A list: the
        parent answered with a plain list instead (a seed, whose list changes with time;
        a complete parent; a parent without streams). Raises :class:`ParentError` when
        the parent cannot be read or the stream ends early.
        """
        url = f"{parent.url(self._scheme)}/api/v1/tasks/{task_id}/pieces?stream=1"
        try:
            async with self._session.get(url, timeout=self._stream_timeout) as resp:
                if resp.status != 200:
                    raise ParentError(f"status_{resp.status}", f"{url}: {resp.status}")
                if resp.content_type != STREAM_CONTENT_TYPE:
                    return _piece_list(await resp.json())
                listed: PieceList | None = None
                async for line in resp.content:
                    if not line.strip():
                        continue  # the parent's heartbeat
                    body = json.loads(line)
                    if listed is None:
                        listed = _piece_list(body)
                    else:
                        listed = dataclasses.replace(
                            listed,
                            complete=bool(body["complete"]),
                            pieces=listed.pieces.union(int(i) for i in body["pieces"]),
                        )
                    on_list(listed)
                    if listed.complete:
                        return None
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            raise self._unreachable(parent, url, exc) from exc
        raise ParentError("stream_ended", f"{url}: the stream ended before the list was complete")

    async def fetch_piece(
        self,
        parent: ParentInfo,
        task_id: str,
        index: int,
        fd: int,
        offset: int,
        size: int,
        hasher: SpanHasher,
    ) -> float:
        """Write piece ``index`` into ``fd`` at ``offset``, hashing it on the way.

        Returns the seconds it took.
        """
        url = f"{parent.url(self._scheme)}/api/v1/tasks/{task_id}/pieces/{index}"
        started = time.monotonic()
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    reason = "busy" if resp.status == 503 else f"status_{resp.status}"
                    raise ParentError(reason, f"{url}: {resp.status}")
                position = offset
                batch: list[bytes] = []
                batched = 0
                low_water = _ReadLowWater(resp, size) if self._scheme == "http" else None
                try:
                    async for chunk, _ in resp.content.iter_chunks():  # no joining copy
                        if low_water is not None:
                            low_water.update()
                        if position + batched + len(chunk) > offset + size:
                            raise ParentError("too_long", f"{url}: more than {size} bytes")
                        batch.append(chunk)
                        batched += len(chunk)
                        if batched >= PIECE_READ_BYTES:
                            await asyncio.to_thread(write_chunks, fd, batch, position, hasher)
                            position += batched
                            batch, batched = [], 0
                finally:
                    if low_water is not None:
                        low_water.reset()
                if batch:
                    await asyncio.to_thread(write_chunks, fd, batch, position, hasher)
                    position += batched
                if position != offset + size:
                    raise ParentError("short", f"{url}: {position - offset} of {size} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(parent, url, exc) from exc
        except OSError as exc:
            raise ParentError("local_write", f"writing piece {index}: {exc}") from exc
        return time.monotonic() - started

    def _unreachable(self, parent: ParentInfo, url: str, exc: BaseException) -> ParentError:
        tls = describe_failure(exc)
        if tls is None:
            return ParentError("unreachable", f"{url}: {exc!r}")
        base = parent.url(self._scheme)
        now = time.monotonic()
        if now - self._tls_warned.get(base, -TLS_WARNING_INTERVAL_S) >= TLS_WARNING_INTERVAL_S:
            self._tls_warned[base] = now
            log.warning("parent %s (host %s) cannot be used: %s", base, parent.host_id, tls)
        return ParentError("unreachable", f"{url}: {tls}")
