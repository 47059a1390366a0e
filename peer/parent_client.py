"""Fetching pieces from parent peers' piece servers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from peer.origin import write_chunks
from peer.piece_hasher import SpanHasher
from peer.scheduler_client import ParentInfo

PIECE_READ_BYTES = 1024 * 1024


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


class ParentClient:
    def __init__(self, token: str | None, connect_timeout_s: float, read_timeout_s: float) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
            ),
            read_bufsize=4 * 1024 * 1024,
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def close(self) -> None:
        await self._session.close()

    async def piece_list(self, parent: ParentInfo, task_id: str) -> PieceList:
        url = f"{parent.url}/api/v1/tasks/{task_id}/pieces"
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    raise ParentError(f"status_{resp.status}", f"{url}: {resp.status}")
                body = await resp.json()
                return PieceList(
                    int(body["size_bytes"]),
                    int(body["piece_bytes"]),
                    bool(body["complete"]),
                    frozenset(int(i) for i in body["pieces"]),
                    bool(body.get("seed", False)),
                )
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            raise ParentError("unreachable", f"{url}: {exc!r}") from exc

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
        url = f"{parent.url}/api/v1/tasks/{task_id}/pieces/{index}"
        started = time.monotonic()
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    reason = "busy" if resp.status == 503 else f"status_{resp.status}"
                    raise ParentError(reason, f"{url}: {resp.status}")
                position = offset
                batch: list[bytes] = []
                batched = 0
                async for chunk in resp.content.iter_any():
                    if position + batched + len(chunk) > offset + size:
                        raise ParentError("too_long", f"{url}: more than {size} bytes")
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched >= PIECE_READ_BYTES:
                        await asyncio.to_thread(write_chunks, fd, batch, position, hasher)
                        position += batched
                        batch, batched = [], 0
                if batch:
                    await asyncio.to_thread(write_chunks, fd, batch, position, hasher)
                    position += batched
                if position != offset + size:
                    raise ParentError("short", f"{url}: {position - offset} of {size} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ParentError("unreachable", f"{url}: {exc!r}") from exc
        except OSError as exc:
            raise ParentError("local_write", f"writing piece {index}: {exc}") from exc
        return time.monotonic() - started
