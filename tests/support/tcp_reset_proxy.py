"""A TCP forwarder that can end connections with a reset, for faults below HTTP.

Put it in front of any server (a peer's piece server, a registry): bytes pass through
unchanged in both directions. With ``reset_after_bytes`` set, a connection that has sent
the client that many bytes is torn down with a TCP reset (RST) on both sides, as when a
process crashes or a middlebox drops state; ``resets_left`` limits how many connections
get that treatment (None: every one).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from types import TracebackType

READ_BYTES = 64 * 1024
START_TIMEOUT_S = 10.0


class TcpResetProxy:
    """Forwards 127.0.0.1:<ephemeral> to 127.0.0.1:``target_port`` from its own thread."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.reset_after_bytes: int | None = None
        self.resets_left: int | None = None
        self.resets = 0  # connections ended with a reset so far
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-reset-proxy")
        self._thread.daemon = True
        self.port = 0

    def start(self) -> TcpResetProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=START_TIMEOUT_S)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> TcpResetProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reset_budget(self) -> int | None:
        """The byte count after which this new connection is reset, if it is to be."""
        with self._lock:
            after = self.reset_after_bytes
            if after is None:
                return None
            if self.resets_left is not None:
                if self.resets_left <= 0:
                    return None
                self.resets_left -= 1
            return after

    async def _forward(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        reset_after = self._reset_budget()
        try:
            target_r, target_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _reset(client_w)
            return
        upstream = asyncio.create_task(_pump(client_r, target_w, None))
        try:
            reset = await _pump(target_r, client_w, reset_after)
        finally:
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await upstream
        if reset:
            with self._lock:
                self.resets += 1
            _reset(client_w)
            _reset(target_w)
        else:
            for writer in (client_w, target_w):
                writer.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reset_after: int | None
) -> bool:
    """Copy until EOF; True when it stopped because ``reset_after`` bytes went through."""
    sent = 0
    try:
        while data := await reader.read(READ_BYTES):
            if reset_after is not None and sent + len(data) >= reset_after:
                writer.write(data[: reset_after - sent])
                with contextlib.suppress(OSError):
                    await writer.drain()
                return True
            writer.write(data)
            await writer.drain()
            sent += len(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        writer.write_eof()
    return False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel answers with RST and drops unsent bytes."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
