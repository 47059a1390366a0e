"""Headless Debian ``chromium`` driven over the Chrome DevTools Protocol.

The protocol is JSON over a websocket, which aiohttp (already a dependency) speaks, so
no driver binary and no browser automation package are needed. Chromium starts with a
fresh profile and ``--remote-debugging-port=0``; it writes the port it picked to
``DevToolsActivePort`` in the profile, and the page target's websocket is listed at
``/json/list``. Every console message, uncaught exception and browser log entry (failed
loads, Content-Security-Policy violations) is recorded, so a test can insist on none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.polling import POLL_INTERVAL_S

# The flags the project runs chromium with: no network of its own, no first-run work.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 30.0


def chromium_unavailable_reason() -> str | None:
    if shutil.which("chromium") is None:
        return "chromium is not installed (Debian: apt-get install chromium)"
    return None


@dataclass(frozen=True)
class ConsoleEntry:
    """Something the page said in the console or the browser logged about it."""

    kind: str  # "console", "exception" or "log"
    level: str
    text: str

    @property
    def is_error(self) -> bool:
        return self.kind == "exception" or self.level in ("error", "assert", "warning")


class Browser:
    """One headless chromium with one page; use ``async with Browser(...) as browser``."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self._size = (width, height)
        self._profile = Path(tempfile.mkdtemp(prefix="starling-chromium-"))
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.console: list[ConsoleEntry] = []
        self._loaded = asyncio.Event()

    async def __aenter__(self) -> Browser:
        chromium = shutil.which("chromium")
        assert chromium is not None, chromium_unavailable_reason()
        width, height = self._size
        self._process = await asyncio.create_subprocess_exec(
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            port = await self._devtools_port()
            self._session = aiohttp.ClientSession()
            url = await self._page_socket_url(port)
            self._socket = await self._session.ws_connect(url, max_msg_size=0)
            self._reader = asyncio.create_task(self._read())
            for domain in ("Page", "Runtime", "Log"):
                await self.send(f"{domain}.enable")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.close()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def _devtools_port(self) -> int:
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            assert self._process is not None
            if self._process.returncode is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"chromium wrote no DevToolsActivePort in {START_TIMEOUT_S} s")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _page_socket_url(self, port: int) -> str:
        assert self._session is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    targets = await resp.json(content_type=None)
                for target in targets:
                    if target.get("type") == "page":
                        return str(target["webSocketDebuggerUrl"])
            if time.monotonic() >= deadline:
                raise TimeoutError("chromium listed no page target")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _read(self) -> None:
        assert self._socket is not None
        async for message in self._socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
            else:
                self._record(data.get("method", ""), data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the DevTools connection closed"))

    def _record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])
            )
            self.console.append(ConsoleEntry("console", params.get("type", ""), text))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append(ConsoleEntry("exception", "error", text))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            text = f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
            self.console.append(ConsoleEntry("log", entry.get("level", ""), text))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self._socket is not None
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._socket.send_str(
            json.dumps({"id": message_id, "method": method, "params": params or {}})
        )
        return await asyncio.wait_for(future, 30)

    async def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event (scripts with ``defer`` have run)."""
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"navigating to {url} failed: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), START_TIMEOUT_S)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (awaited if a promise)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float, what: str, show: str = "''") -> Any:
        """Poll a JavaScript expression until it is truthy; its value.

        On timeout the error names ``what`` and gives the value of the expression ``show``
        (what the page shows instead) and the console errors.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                errors = [e.text for e in self.console if e.is_error]
                raise TimeoutError(
                    f"timed out after {timeout_s:.1f} s waiting for {what}; the page shows "
                    f"{await self.evaluate(show)!r}; console errors: {errors}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)

    async def screenshot(self) -> bytes:
        """A PNG of the whole page, not only the window."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        result = await self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        return base64.b64decode(result["data"])

    def errors(self) -> list[ConsoleEntry]:
        return [entry for entry in self.console if entry.is_error]
