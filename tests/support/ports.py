"""Free ports and HTTP readiness polling."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
from collections.abc import Callable

from .polling import POLL_INTERVAL_S

__all__ = ["POLL_INTERVAL_S", "free_port", "http_status", "wait_http"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Only for processes that must be told their port on the command line or in a config
    file (the registry); in-process servers bind port 0 themselves and avoid the race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """Return the status of a GET to ``url``, or None if nothing answered HTTP."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_http(
    url: str,
    timeout_s: float,
    check: Callable[[], None] | None = None,
) -> int:
    """Poll ``url`` until any HTTP answer arrives; return its status.

    ``check`` runs before every attempt and may raise to abort early, for example when
    the process that should answer has already exited (waiting out the timeout would
    only hide the real error).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        status = http_status(url, timeout_s=max(0.1, min(1.0, deadline - time.monotonic())))
        if status is not None:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no HTTP answer from {url} within {timeout_s:.1f} s")
        time.sleep(POLL_INTERVAL_S)
