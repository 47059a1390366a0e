"""The real ``p2p-peer`` daemon as a separate process, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from tests.support.counting_proxy import CountingProxy
from tests.support.ports import free_port, wait_http
from tests.support.processes import log_tail
from tests.support.registry import RegistryProcess


class PeerProcess:
    """``p2p-peer`` started with a YAML config in ``work_dir`` on a free loopback port."""

    def __init__(self, work_dir: Path, settings: dict[str, Any]) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.data_dir = work_dir / "data"
        self.log_path = work_dir / "peer.log"
        self.config_path = work_dir / "peer.yaml"
        work_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "piece_listen": "127.0.0.1:0",
            "data_dir": str(self.data_dir),
            **settings,
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> PeerProcess:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "peer.cli", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the caller (the demo) does not kill it
            # behind the caller's back; the caller stops it.
            start_new_session=True,
        )
        try:
            wait_http(f"{self.url}/healthz", timeout_s=20)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"p2p-peer did not start: {exc}\n{log_tail(self.log_path)}") from exc
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a frozen peer could not hear SIGTERM
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the running daemon (SIGSTOP freezes it, SIGCONT thaws it)."""
        assert self._process is not None, "not running"
        self._process.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the daemon to exit by itself; returns its exit status."""
        assert self._process is not None, "not running"
        return self._process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format, 0 when absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


class SchedulerProcess:
    """``p2p-scheduler`` on a free loopback port, with a cluster token and, optionally,
    more settings (``redis_url``, ...) in a YAML config file."""

    def __init__(self, work_dir: Path, token: str, settings: dict[str, Any] | None = None) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.token = token
        self.log_path = work_dir / "scheduler.log"
        self.config_path = work_dir / "scheduler.yaml"
        self.config_path.write_text(yaml.safe_dump(settings or {}))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._spawn()
        try:
            self._wait_until_healthy()
        except Exception as exc:
            self.kill()
            raise RuntimeError(
                f"p2p-scheduler did not start: {exc}\n{log_tail(self.log_path)}"
            ) from exc
        return self

    def _wait_until_healthy(self) -> None:
        wait_http(f"{self.url}/healthz", timeout_s=20)

    def _spawn(self) -> None:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler.service.cli",
                "--config",
                str(self.config_path),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "STARLING_TOKEN": self.token},
            start_new_session=True,  # as PeerProcess
        )

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_scheduler(tmp_path: Path) -> Iterator[Any]:
    schedulers: list[SchedulerProcess] = []

    def start(token: str = "e2e-cluster-token", **settings: Any) -> SchedulerProcess:
        work_dir = tmp_path / f"scheduler{len(schedulers)}"
        scheduler = SchedulerProcess(work_dir, token, settings).start()
        schedulers.append(scheduler)
        return scheduler

    yield start
    for scheduler in schedulers:
        scheduler.kill()


@pytest.fixture
def start_peer(tmp_path: Path) -> Iterator[Any]:
    peers: list[PeerProcess] = []

    def start(name: str = "peer", **settings: Any) -> PeerProcess:
        peer = PeerProcess(tmp_path / name, settings).start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


@pytest.fixture
def swarm(
    registry: RegistryProcess, counting_proxy: CountingProxy, start_scheduler: Any, start_peer: Any
) -> Any:
    """A scheduler, and ``join(name, **settings)`` for peers that use it and fetch the
    registry's blobs through the counting proxy (``tests.e2e.swarm_helpers.Swarm``)."""
    from tests.e2e.swarm_helpers import start_swarm  # it imports this module

    return start_swarm(registry.host, counting_proxy.url, start_scheduler, start_peer)
