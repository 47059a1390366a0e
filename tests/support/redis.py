"""A real ``redis-server`` (Debian package redis-server) on a free loopback port.

No persistence (``save ""``, no AOF): a restart comes back empty, the harder case for the
scheduler replicas. ``restart()`` reuses the port, as a Redis behind a fixed address does.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from .polling import POLL_INTERVAL_S
from .ports import free_port
from .processes import LoggedProcess, ProcessFailed

REDIS_BINARY = "redis-server"
START_TIMEOUT_S = 10.0
# free_port() can race with another process binding the port first.
START_ATTEMPTS = 3


def redis_unavailable_reason() -> str | None:
    """Why the Redis fixture cannot run here, or None when it can."""
    if shutil.which(REDIS_BINARY) is None:
        return f"{REDIS_BINARY} not installed (Debian package redis-server)"
    return None


def redis_ping(port: int, timeout_s: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING (RESP spoken by hand)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = work_dir / "redis.log"
        self.port: int | None = None
        self._process: LoggedProcess | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("redis is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        for attempt in range(START_ATTEMPTS):
            port = self.port if self.port is not None else free_port()
            try:
                self._start_on(port)
            except ProcessFailed:
                if self.port is not None or attempt == START_ATTEMPTS - 1:
                    raise
                continue
            self.port = port
            return self
        raise AssertionError("unreachable")

    def _start_on(self, port: int) -> None:
        argv = [
            REDIS_BINARY,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(self.work_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]
        process = LoggedProcess(argv, self.log_path, "redis-server")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not redis_ping(port):
            if not process.alive() or time.monotonic() >= deadline:
                process.stop()
                raise ProcessFailed(process.describe_failure(f"no PONG on port {port}"))
            time.sleep(POLL_INTERVAL_S)
        self._process = process

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def kill(self) -> None:
        """SIGKILL: Redis gone without a goodbye, as in a crash."""
        if self._process is not None:
            self._process.popen.kill()
            self._process.popen.wait()
            self._process = None

    def restart(self) -> None:
        """Kill and start again, empty, on the same port."""
        self.kill()
        self.start()
