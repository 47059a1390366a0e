"""Processes on the swarm benchmark's nodes: registry, scheduler, peers, pull clients.

Each runs on a :class:`bench.swarm_net.Node` (inside its network namespace when it has
one). A pull client prints ``ready`` and waits for ``go`` on stdin, so every node starts
pulling at the same moment (see :mod:`bench.swarm_client`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.probes import host_cpu_jiffies, process_cpu_s
from bench.report import REPO_ROOT, round_
from bench.swarm_net import Node
from tests.support.processes import LoggedProcess

REPO = "starling-bench/swarm"
TAG = "v1"
TOKEN = "starling-swarm-bench-token"
# Clients pull at most this many blobs at once, like containerd (max_concurrent_downloads).
CLIENT_CONCURRENCY = 3
SAMPLE_S = 1.0


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{'name{labels}': value}``, without histogram buckets."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if "_bucket{" in name or name.endswith("_created") or "_created{" in name:
            continue
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.update(extra or {})
    return env


@dataclass
class Daemon:
    """A long-running process on a node (registry, scheduler or peer)."""

    name: str
    node: Node
    process: LoggedProcess
    log_path: Path
    cpu_at_start_s: float = 0.0

    def check_alive(self) -> None:
        self.process.check_alive()

    def cpu_s(self) -> float | None:
        try:
            return process_cpu_s(self.process.pid)
        except OSError:
            return None

    def stop(self) -> None:
        self.process.stop()


def start_daemon(
    name: str, node: Node, argv: list[str], work_dir: Path, env: dict[str, str] | None = None
) -> Daemon:
    log_path = work_dir / f"{name}.log"
    process = LoggedProcess(node.argv(argv), log_path, name, env=child_env(env))
    return Daemon(name, node, process, log_path)


def registry_config(node: Node, storage: Path) -> dict[str, Any]:
    """The CNCF registry on the node's address, filesystem storage, access log on."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": f"{node.address}:{node.ports['registry']}",
            "secret": "starling-swarm-bench-secret",
        },
        "health": {"storagedriver": {"enabled": False}},
    }


def peer_config(
    node: Node,
    work_dir: Path,
    scheduler: Node,
    registry: Node,
    seed: bool,
    in_app_upload: bool,
    min_piece_bytes: int | None,
) -> dict[str, Any]:
    registry_host = f"{registry.address}:{registry.ports['registry']}"
    up_Bps = (node.shaping.up_bps or 0.0) / 8
    down_Bps = (node.shaping.down_bps or 0.0) / 8
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{node.ports['mirror']}",
        "piece_listen": f"{node.address}:{node.ports['piece']}",
        "advertise_address": node.address,
        "data_dir": str(work_dir / "data"),
        "scheduler": scheduler.url("scheduler"),
        "token": TOKEN,
        "host_id": node.name,
        "seed": seed,
        # What the operator would announce for this host: its real link rates.
        "upload_capacity_bps": up_Bps,
        "download_capacity_bps": down_Bps,
        # Without kernel shaping the peer's own cap is the only limit there is.
        "upload_rate_bps": up_Bps if in_app_upload else 0.0,
        "upstream": {"default_registry": registry_host, "insecure_registries": [registry_host]},
    }
    if min_piece_bytes is not None:
        config["min_piece_bytes"] = min_piece_bytes
    return config


@dataclass
class PullClient:
    """``bench.swarm_client pull`` on one node, waiting for the go signal."""

    node: Node
    popen: subprocess.Popen[bytes]
    ready: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                message = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if message.get("ready"):
                self.ready.set()
            else:
                self.result = message
        self.popen.wait()
        self.finished.set()
        self.ready.set()  # a client that died before ready must not hold up the others

    def go(self) -> None:
        stdin: IO[bytes] | None = self.popen.stdin
        if stdin is not None and self.popen.poll() is None:
            try:
                stdin.write(b"go\n")
                stdin.close()
            except BrokenPipeError:
                pass

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def start_pull_client(
    node: Node,
    base: str,
    ns: str,
    fallback: str,
    blobs: str,
    timeout_s: float,
    log_path: Path,
    retry: bool = False,
    concurrency: int = CLIENT_CONCURRENCY,
) -> PullClient:
    """A client pulling from ``base``, then ``fallback`` (or ``base`` again if ``retry``)."""
    argv = [sys.executable, "-m", "bench.swarm_client", "pull", "--base", base]
    argv += ["--repo", REPO, "--tag", TAG, "--blobs", blobs, "--timeout", str(timeout_s)]
    argv += ["--concurrency", str(concurrency)]
    if ns:
        argv += ["--ns", ns]
    if fallback:
        argv += ["--fallback", fallback]
    if retry:
        argv.append("--retry")
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            node.argv(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
            env=child_env(),
            start_new_session=True,
        )
    client = PullClient(node, popen)
    threading.Thread(target=client.read, daemon=True).start()
    return client


class PhaseSampler:
    """Every ``SAMPLE_S`` while the pulls run: the machine's busy share and link bytes.

    ``links`` returns each node's (uploaded, downloaded) byte counters; the timeline keeps
    the rates of the registry's and the seed's uploads and the peers' sums, which shows
    how much of the swarm's capacity was in use at each moment.
    """

    def __init__(self, links: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self._links = links
        self.cpu_samples: list[float] = []
        self.timeline: dict[str, list[float]] = {
            "t_s": [],
            "registry_up_Bps": [],
            "seed_up_Bps": [],
            "peers_up_Bps": [],
            "peers_down_Bps": [],
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start = host_cpu_jiffies()
        self._links_start = links()
        self._links_end: dict[str, tuple[int, int]] = {}
        self._t0 = time.monotonic()

    def _run(self) -> None:
        last_cpu, last_links, last_t = self._cpu_start, self._links_start, self._t0
        while not self._stop.wait(SAMPLE_S):
            cpu, links, now = host_cpu_jiffies(), self._links(), time.monotonic()
            if cpu[1] > last_cpu[1]:
                self.cpu_samples.append((cpu[0] - last_cpu[0]) / (cpu[1] - last_cpu[1]))
            if links and last_links:
                self._add_rates(last_links, links, now - last_t, now - self._t0)
            last_cpu, last_links, last_t = cpu, links, now

    def _add_rates(
        self,
        before: dict[str, tuple[int, int]],
        after: dict[str, tuple[int, int]],
        seconds: float,
        at_s: float,
    ) -> None:
        def rate(name: str, direction: int) -> float:
            if name not in after or name not in before:
                return 0.0
            return (after[name][direction] - before[name][direction]) / seconds

        peers = [name for name in after if name.startswith("peer")]
        line = self.timeline
        line["t_s"].append(round(at_s, 2))
        line["registry_up_Bps"].append(round(rate("registry", 0)))
        line["seed_up_Bps"].append(round(rate("seed", 0)))
        line["peers_up_Bps"].append(round(sum(rate(p, 0) for p in peers)))
        line["peers_down_Bps"].append(round(sum(rate(p, 1) for p in peers)))

    def start(self) -> PhaseSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._links_end = self._links()
        busy, total = host_cpu_jiffies()
        start_busy, start_total = self._cpu_start
        share = (busy - start_busy) / (total - start_total) if total > start_total else 0.0
        samples = self.cpu_samples
        return {
            "window_s": round_(time.monotonic() - self._t0, 3),
            "host_cpu_busy": round_(share, 3),
            "host_cpu_busy_max_sample": round_(max(samples), 3) if samples else None,
            "host_cpu_busy_samples": [round_(s, 3) for s in samples],
        }

    def link_totals(self) -> dict[str, tuple[int, int]]:
        """Per node: (uploaded, downloaded) bytes between start and stop."""
        return {
            name: (up - self._links_start[name][0], down - self._links_start[name][1])
            for name, (up, down) in self._links_end.items()
            if name in self._links_start
        }


@dataclass
class Image:
    layers: list[tuple[str, int]]
    config: tuple[str, int]
    manifest_digest: str

    @property
    def blobs(self) -> list[tuple[str, int]]:
        return [self.config, *self.layers]

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.blobs)

    def blobs_arg(self) -> str:
        return ",".join(f"{d}:{s}" for d, s in self.blobs)
