"""What the mirror benchmark measures with: curl, ctr, the peer process and /proc.

Every probe checks its own result (status, byte count, content present) and raises
:class:`BenchError` when the transfer did not really happen, so no figure is ever
recorded for a transfer that failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.containerd import ContainerdProcess
from tests.support.images import PushedImage
from tests.support.polling import wait_until
from tests.support.ports import free_port, wait_http
from tests.support.processes import LoggedProcess, log_tail

MB = 1000**2
NAMESPACE = "bench"
PEER_START_TIMEOUT_S = 20.0
PEER_IDLE_TIMEOUT_S = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Samples of the peer's /metrics the benchmark reads.
SERVED = "p2p_peer_served_bytes_total"
FROM_ORIGIN = 'p2p_peer_download_bytes_total{source="origin"}'
HITS = 'p2p_peer_blob_requests_total{result="hit"}'
MISSES = 'p2p_peer_blob_requests_total{result="miss"}'
DOWNLOAD_SECONDS = "p2p_peer_blob_download_duration_seconds_sum"


class BenchError(RuntimeError):
    """A measurement could not be taken or its result failed a check."""


@dataclass
class Sample:
    """One timed transfer of the layer."""

    seconds: float
    size_bytes: int
    # Time to the first body byte, as curl saw it (raw GET only).
    ttfb_s: float | None = None
    # CPU seconds the peer process (all its threads) used during the transfer.
    peer_cpu_s: float | None = None
    # Share of all CPUs of the machine that were busy during the transfer (0..1).
    host_cpu_busy: float | None = None

    @property
    def mb_per_s(self) -> float:
        return self.size_bytes / self.seconds / MB


# /proc ----------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, all threads included."""
    # The command name may hold spaces; the fields after it start with the state.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def host_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    total = sum(values[:8])  # guest time is already part of user time
    return total - idle, total


def host_busy_over(seconds: float) -> float:
    """Share of all CPUs busy during the next ``seconds``: other load on the machine."""
    busy0, total0 = host_cpu_jiffies()
    time.sleep(seconds)
    busy, total = host_cpu_jiffies()
    return (busy - busy0) / (total - total0) if total > total0 else 0.0


def wait_for_quiet(
    limit_s: float, busy_share: float, say: Callable[[str], None]
) -> tuple[float, float]:
    """Wait (up to ``limit_s``) until other load leaves the CPUs mostly idle.

    Returns (seconds waited, busy share of the last second). Other work on the machine
    would slow what is measured down and be counted against it.
    """
    started = time.monotonic()
    while True:
        busy = host_busy_over(1.0)
        waited = time.monotonic() - started
        if busy <= busy_share or waited >= limit_s:
            return round(waited, 1), round(busy, 3)
        if waited < 1.5:
            say(f"waiting up to {limit_s:.0f}s for other load to stop ({busy:.0%} busy) ...")


def meminfo() -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        found[key] = int(value.split()[0]) * 1024  # the kernel reports kB
    return found


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


class CpuMeter:
    """CPU time of one process and the busy share of the machine over an interval."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._process0 = process_cpu_s(pid) if pid is not None else 0.0
        self._busy0, self._total0 = host_cpu_jiffies()

    def stop(self, sample: Sample) -> Sample:
        if self._pid is not None:
            sample.peer_cpu_s = process_cpu_s(self._pid) - self._process0
        busy, total = host_cpu_jiffies()
        if total > self._total0:
            sample.host_cpu_busy = (busy - self._busy0) / (total - self._total0)
        return sample


# Clients ------------------------------------------------------------------------------


def curl_get(url: str, size_bytes: int, timeout_s: float) -> Sample:
    """GET ``url`` into /dev/null with curl; check the status and the byte count."""
    argv = [
        "curl",
        "--silent",
        "--show-error",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code} %{size_download} %{time_starttransfer}",
        url,
    ]
    started = time.monotonic()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"GET {url} took over {timeout_s:.0f}s") from exc
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise BenchError(f"curl {url} exited {result.returncode}: {result.stderr.strip()}")
    status, received, ttfb = result.stdout.split()
    if status != "200" or int(received) != size_bytes:
        raise BenchError(f"GET {url}: status {status}, {received} of {size_bytes} bytes")
    return Sample(seconds, size_bytes, ttfb_s=float(ttfb))


def ctr_transfer(
    work_dir: Path,
    image: PushedImage,
    hosts_dir: Path,
    timeout_s: float,
    meter_for: Callable[[], CpuMeter],
    unpack: bool,
) -> Sample:
    """Time ``ctr images pull`` (``unpack``) or ``ctr content fetch`` by a new containerd.

    containerd's content store is shared by its namespaces, so each transfer gets a
    containerd of its own: nothing is local before it starts.
    """
    layer_digest, size_bytes = image.layers[0]
    containerd = ContainerdProcess(work_dir).start()
    try:
        transfer = containerd.pull if unpack else containerd.fetch
        meter = meter_for()
        started = time.monotonic()
        result = transfer(
            image.reference, namespace=NAMESPACE, hosts_dir=hosts_dir, timeout_s=timeout_s
        )
        sample = meter.stop(Sample(time.monotonic() - started, size_bytes))
        if result.returncode != 0:
            raise BenchError(f"ctr exited {result.returncode}: {result.stderr.strip()[-2000:]}")
        stored = containerd.content_path(layer_digest)
        if not stored.exists() or stored.stat().st_size != size_bytes:
            raise BenchError(f"containerd has no complete copy of {layer_digest} afterwards")
        return sample
    finally:
        containerd.stop()


# The peer daemon ----------------------------------------------------------------------


class PeerDaemon:
    """``python -m peer.cli`` with a fresh data dir, on a free loopback port."""

    def __init__(self, work_dir: Path, registry_host: str, quota_bytes: int) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.log_path = work_dir / "peer.log"
        self.config_path = work_dir / "peer.yaml"
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "data_dir": str(work_dir / "data"),
            "cache_quota": quota_bytes,
            "upstream": {
                "default_registry": registry_host,
                "insecure_registries": [registry_host],
            },
        }
        work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        self._process: LoggedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the peer is not running")
        return self._process.pid

    def start(self) -> PeerDaemon:
        argv = [sys.executable, "-m", "peer.cli", "--config", str(self.config_path)]
        self._process = LoggedProcess(argv, self.log_path, "p2p-peer")
        try:
            wait_http(f"{self.url}/healthz", PEER_START_TIMEOUT_S, check=self._process.check_alive)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body: bytes = response.read()
            return body

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as ``{'name{labels}': value}``."""
        samples: dict[str, float] = {}
        for line in self._get("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def wait_idle(self, blobs: int) -> None:
        """Until no download runs and at least ``blobs`` complete blobs are cached."""

        def idle() -> bool:
            health = json.loads(self._get("/healthz"))
            return bool(health["tasks_active"] == 0 and health["cache_blobs"] >= blobs)

        wait_until(idle, PEER_IDLE_TIMEOUT_S, "the peer to finish its download")

    def memory(self) -> dict[str, int]:
        """Peak (VmHWM) and current (VmRSS) resident memory of the peer process."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0]) * 1024  # the kernel reports kB
        return {"peak_rss_bytes": found["VmHWM"], "rss_bytes": found["VmRSS"]}

    def log_tail(self) -> str:
        return log_tail(self.log_path)


def check_served(
    after: dict[str, float], before: dict[str, float], size_bytes: int, path: str
) -> float | None:
    """The peer's metrics must show it served the layer, and how (cache or origin).

    Returns, for a cold transfer, how long the peer's own download took.
    """

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    if delta(SERVED) < size_bytes:
        raise BenchError(f"{path}: the peer served only {delta(SERVED):.0f} of {size_bytes} bytes")
    if path == "cold":
        if delta(MISSES) < 1 or delta(FROM_ORIGIN) < size_bytes:
            raise BenchError(f"cold: the peer downloaded only {delta(FROM_ORIGIN):.0f} bytes")
        return delta(DOWNLOAD_SECONDS)
    if path == "warm" and (delta(HITS) < 1 or delta(FROM_ORIGIN) > 0):
        raise BenchError("warm: the layer was not served from the peer's cache")
    return None
