"""Fetching byte ranges of a blob from its upstream registry (back-to-source)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from peer.piece_hasher import SpanHasher
from registry_proxy.errors import UpstreamError
from registry_proxy.ranges import ByteRange
from registry_proxy.upstream import Upstream, UpstreamClient

WRITE_BATCH_BYTES = 1024 * 1024


class PieceFetchError(Exception):
    """One attempt at a piece failed; the caller may retry it."""


@dataclass(frozen=True)
class BlobOrigin:
    """Where and as whom a blob is fetched back-to-source."""

    upstream: Upstream
    name: str
    digest: str
    authorization: str | None


class OriginFetcher:
    """Writes byte ranges of one blob, fetched from the registry, into the task file."""

    def __init__(self, client: UpstreamClient, origin: BlobOrigin) -> None:
        self._client = client
        self._origin = origin

    async def fetch_range(
        self,
        fd: int,
        byte_range: ByteRange,
        whole_blob: bool,
        on_written: Callable[[int], Awaitable[None]],
        hasher: SpanHasher | None = None,
    ) -> None:
        """Fetch ``byte_range`` into ``fd`` at its offset.

        ``on_written(end)`` is awaited each time the bytes up to offset ``end`` are in
        the file, so the caller can use pieces before the whole range has arrived;
        ``hasher`` sees every byte on its way to the file.
        Raises :class:`PieceFetchError` for anything worth retrying: a refused
        connection, an error status, a body of the wrong length, a read timeout.
        """
        origin = self._origin
        try:
            response = await self._client.blob(
                origin.upstream,
                origin.name,
                origin.digest,
                "GET",
                origin.authorization,
                None if whole_blob else byte_range.header(),
            )
        except UpstreamError as exc:
            raise PieceFetchError(str(exc)) from exc
        async with response:
            expected_status = 200 if whole_blob else 206
            if response.status != expected_status:
                raise PieceFetchError(
                    f"{origin.upstream.registry} answered {response.status} for "
                    f"{origin.digest} range {byte_range.header()}"
                )
            await _write_body(response, fd, byte_range, on_written, hasher)


async def _write_body(
    response: aiohttp.ClientResponse,
    fd: int,
    byte_range: ByteRange,
    on_written: Callable[[int], Awaitable[None]],
    hasher: SpanHasher | None,
) -> None:
    offset = byte_range.start
    batch: list[bytes] = []
    batched = 0
    try:
        # One buffered chunk at a time: iter_any() would join what is buffered into a
        # new bytes object, a copy of every byte that a cold download pays for in CPU.
        async for chunk, _ in response.content.iter_chunks():
            if offset + batched + len(chunk) > byte_range.stop:
                raise PieceFetchError("upstream sent more bytes than the range holds")
            batch.append(chunk)
            batched += len(chunk)
            if batched >= WRITE_BATCH_BYTES:
                # Writes go to a thread: a slow disk must not block the event loop.
                await asyncio.to_thread(write_chunks, fd, batch, offset, hasher)
                offset += batched
                batch, batched = [], 0
                await on_written(offset)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PieceFetchError(f"reading from upstream failed: {exc!r}") from exc
    except OSError as exc:
        raise PieceFetchError(f"writing the task file failed: {exc}") from exc
    if batch:
        try:
            await asyncio.to_thread(write_chunks, fd, batch, offset, hasher)
        except OSError as exc:
            raise PieceFetchError(f"writing the task file failed: {exc}") from exc
        offset += batched
        await on_written(offset)
    if offset != byte_range.stop:
        raise PieceFetchError(
            f"upstream body ended after {offset - byte_range.start} of {byte_range.length} bytes"
        )


def write_chunks(fd: int, chunks: list[bytes], offset: int, hasher: SpanHasher | None) -> None:
    """Hash (optionally) and write ``chunks`` back to back at ``offset``, no joining.

    Runs on a worker thread: both hashing and writing release the GIL.
    """
    if hasher is not None:
        hasher.update(chunks, offset)
    views = [memoryview(chunk) for chunk in chunks]
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
