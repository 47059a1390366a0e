"""Serving blobs to mirror clients: from the cache or from a download in progress.

Bytes go out with ``sendfile`` from the blob or task file as soon as they are recorded
(the last byte once the blob digest matched). Reads on the event loop were measured as
well: faster for curl on loopback (0.41 s against 0.52 s for a warm 1 GiB blob) but
slower for containerd itself (ctr fetch 6.7 s against 6.0 s direct), which is what
users run, so sendfile stays. A response whose download makes no progress for
``stall_timeout_s`` is ended short rather than left hanging: containerd then resumes
with a ``Range`` request, which is served from the pieces already here.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import socket
import time
from collections.abc import Callable

from aiohttp import web

from peer.engine import CacheFull, Engine
from peer.origin import BlobOrigin
from peer.storage import StorageError
from peer.task import BlobTask, TaskState
from registry_proxy.mirror import BlobRequest, oci_error_response
from registry_proxy.ranges import ByteRange, parse_range

log = logging.getLogger(__name__)

ENGINE_KEY = web.AppKey("engine", Engine)
SEND_BUFFER_BYTES = 4 * 1024 * 1024
# How many stall timeouts a resumed (Range) request waits for its first byte.
RESUME_PATIENCE = 3


async def serve_blob(request: web.Request, blob: BlobRequest) -> web.StreamResponse:
    """The mirror's blob handler."""
    engine = request.app[ENGINE_KEY]
    metrics = engine.metrics
    received_at = time.monotonic()
    complete = engine.complete(blob.digest)
    size_bytes = complete.size_bytes if complete else blob.size_bytes
    byte_range = parse_range(request.headers.get("Range"), size_bytes)
    wanted = byte_range or ByteRange(0, size_bytes)
    with engine.reading(blob.digest):
        task: BlobTask | None = None
        if complete is not None:
            metrics.blob_requests.labels("hit").inc()
            fd = engine.open_complete(blob.digest)
        else:
            task = engine.running(blob.digest)
            metrics.blob_requests.labels("joined" if task else "miss").inc()
            if task is None:
                try:
                    task = engine.ensure_task(
                        BlobOrigin(blob.upstream, blob.name, blob.digest, blob.authorization),
                        blob.size_bytes,
                    )
                except (CacheFull, StorageError) as exc:
                    log.warning("%s: cannot cache: %s", blob.digest, exc)
                    metrics.blob_requests.labels("error").inc()
                    return oci_error_response(503, "UNAVAILABLE", f"peer cannot cache blob: {exc}")
            fd = task.dup_fd()
        log.info(
            "%s: %s bytes %d-%d of %d to %s (%s)",
            blob.digest,
            "range" if byte_range else "serving",
            wanted.start,
            wanted.stop - 1,
            size_bytes,
            request.remote,
            "cache" if task is None else "download",
        )
        with os.fdopen(fd, "rb", buffering=0) as file:
            return await _stream(
                request,
                blob.digest,
                size_bytes,
                wanted,
                byte_range is not None,
                file,
                task,
                engine,
                received_at,
            )


async def _stream(
    request: web.Request,
    digest: str,
    size_bytes: int,
    wanted: ByteRange,
    partial: bool,
    file: io.FileIO,
    task: BlobTask | None,
    engine: Engine,
    received_at: float,
) -> web.StreamResponse:
    metrics = engine.metrics
    stall_s = engine.config.stall_timeout_s
    servable: Callable[[], int] = (
        (lambda: size_bytes) if task is None else (lambda: task.servable_bytes)
    )
    # Before the headers go out a failure can still be a clean 5xx, which sends
    # containerd to its next host; so wait for the first byte we need. A Range request
    # is containerd resuming a body we cut short: it does not fall back on an error
    # then, so waiting longer beats failing the pull.
    first_byte_wait_s = stall_s * RESUME_PATIENCE if partial else stall_s
    if task is not None and not await _wait_for(task, wanted.start, first_byte_wait_s):
        metrics.blob_requests.labels("error").inc()
        message = task.error or f"no data within {first_byte_wait_s}s"
        log.warning("%s: answering 502 before any byte: %s", digest, message)
        return oci_error_response(502, "UNAVAILABLE", f"cannot fetch {digest}: {message}")

    response = web.StreamResponse(status=206 if partial else 200)
    response.headers["Content-Type"] = "application/octet-stream"
    response.headers["Docker-Content-Digest"] = digest
    response.headers["Accept-Ranges"] = "bytes"
    if partial:
        response.headers["Content-Range"] = wanted.content_range(size_bytes)
    response.content_length = wanted.length
    await response.prepare(request)
    transport = request.transport
    _widen_send_buffer(transport)
    loop = asyncio.get_running_loop()
    position = wanted.start
    first = True
    while position < wanted.stop:
        ready = min(wanted.stop, servable())
        if ready > position:
            if transport is None or transport.is_closing():
                return response  # The client went away; the download carries on.
            if first:
                metrics.time_to_first_byte.observe(time.monotonic() - received_at)
                first = False
            try:
                await loop.sendfile(transport, file, position, ready - position)
            except (ConnectionError, RuntimeError) as exc:
                log.info("%s: client went away at byte %d: %r", digest, position, exc)
                return response
            metrics.served_bytes.inc(ready - position)
            position = ready
            continue
        assert task is not None
        if not await _wait_for(task, position, stall_s):
            metrics.stalled_responses.inc()
            reason = task.error or f"no progress for {stall_s}s"
            log.warning("%s: ending response at byte %d: %s", digest, position, reason)
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response


def _widen_send_buffer(transport: asyncio.BaseTransport | None) -> None:
    """Let each sendfile call hand the kernel more bytes: fewer event-loop round trips."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


async def _wait_for(task: BlobTask, offset: int, timeout_s: float) -> bool:
    """True once byte ``offset`` can be served; False on failure or a stall.

    A stall is ``timeout_s`` without any piece arriving, not without the piece this
    client needs: a swarm may deliver other pieces first, and giving up on a download
    that progresses would only send the client to the registry for a second copy.
    """
    while True:
        if _failed(task):
            return False
        if task.servable_bytes > offset:
            return True
        await task.wait_beyond(offset, timeout_s)
        if not _failed(task) and task.servable_bytes > offset:
            return True
        if time.monotonic() - task.last_progress_at >= timeout_s:
            return False


def _failed(task: BlobTask) -> bool:
    return task.state is TaskState.FAILED
