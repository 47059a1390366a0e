"""Run an aiohttp application in a background thread with its own event loop.

Sync tests cannot run an event loop, and async tests must not have the fixture servers on
their own loop: a blocking call in the test (``subprocess.run`` of ctr, a sync push) would
then freeze the very server it talks to. A thread with a private loop serves both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

# Seconds the server waits for in-flight handlers on stop before cancelling them. Tests
# stop servers while streams are still open (a stalled blob), so keep this short.
SHUTDOWN_TIMEOUT_S = 1.0
START_TIMEOUT_S = 10.0


class ThreadedServer:
    """An aiohttp ``web.Application`` served on 127.0.0.1:<ephemeral> from a thread.

    Use as ``with ThreadedServer(app) as srv:`` or ``async with``; or call ``start()``
    and ``stop()`` yourself. The port is bound before ``start()`` returns.
    """

    def __init__(self, app: web.Application, name: str = "threaded-aiohttp") -> None:
        self.app = app
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> ThreadedServer:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"{self.name} did not start within {START_TIMEOUT_S} s")
        if self._start_error is not None:
            raise RuntimeError(f"{self.name} failed to start") from self._start_error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_site())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            # Cancel whatever handlers or helper tasks outlived the runner so the loop
            # closes without "Task was destroyed but it is pending" noise.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start_site(self) -> None:
        # Binding port 0 ourselves (instead of free_port()) leaves no window in which
        # another process could take the port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    def stop(self) -> None:
        """Stop serving, join the thread. Idempotent."""
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None or loop.is_closed():
            return
        if runner is not None:
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            # On a failed cleanup shut down anyway; the loop's finally cancels leftovers.
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                future.result(timeout=SHUTDOWN_TIMEOUT_S + 10.0)
            self._runner = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)

    # -- access ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the form registries and hosts.toml use."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the server's loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout_s)

    # -- context managers ---------------------------------------------------------

    def __enter__(self) -> ThreadedServer:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ThreadedServer:
        if self._thread is None:
            await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Stopping joins a thread; do it off the test's loop so that loop stays live.
        await asyncio.to_thread(self.stop)
