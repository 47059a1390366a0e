"""How fast one big layer reaches a client directly, through a cold peer and a warm peer.

Run as ``python -m bench.mirror_bench`` (``make bench``). A real registry gets an image
with one layer of random bytes (1 GiB by default). Then, for each kind of peer data dir
(``disk`` under /var/tmp, ``tmpfs`` under /dev/shm), three paths to that layer are timed:

* ``direct``: from the registry itself;
* ``cold``: through a new ``p2p-peer`` process with an empty data dir, which downloads
  the blob from the registry while it streams it to the client;
* ``warm``: through the same peer again, now serving the verified blob from its cache.

Each path is measured by three clients: a raw HTTP GET (``curl -o /dev/null``; status
and byte count checked), ``ctr content fetch`` (containerd's download alone) and
``ctr images pull`` (download and unpack with the native snapshotter), each by a fresh
containerd so nothing is local before it starts. containerd reaches the peer through a
hosts.toml naming only the peer, so a failing peer fails the pull instead of silently
falling back to the registry, and the peer's metrics must show it served the layer.

Each round times ``direct`` twice, before and after the peer's cold and warm runs, so
the direct figure (the median of all its samples) does not hang on one place in the
sequence: here that place alone moved a ``ctr images pull`` by 10-15% (a warm pull read
0.85x direct when direct was timed only before the cold run, and 0.99-1.0x when the two
were timed one after the other).

The registry and its storage are shared by all runs, on disk; with enough RAM its copy
of the layer stays in the page cache, as on a busy registry host. containerd keeps its
data next to the peer's, so within a kind all three paths differ only in the path.

Results go to a JSON file (``bench/results/mirror.json``) and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.probes import (
    BenchError,
    CpuMeter,
    PeerDaemon,
    Sample,
    check_served,
    ctr_transfer,
    curl_get,
    host_busy_over,
    load_average,
    meminfo,
)
from bench.report import (
    METHOD_TITLES,
    PATHS,
    PathResult,
    code_state,
    cold_ceiling,
    machine_facts,
    method_json,
    render_table,
    round_,
    sha256_bytes_per_s,
    target_check,
)
from bench.runner import raise_on_sigterm
from peer.sizes import format_size, parse_size
from tests.support.containerd import containerd_unavailable_reason, write_hosts_toml
from tests.support.images import PushedImage, push_image
from tests.support.registry import RegistryProcess, registry_unavailable_reason

MB = 1000**2
MiB = 1024**2
GiB = 1024**3

DEFAULT_LAYER_SIZE = "1GiB"
DEFAULT_OUT = "bench/results/mirror.json"
KIND_BASES = {"disk": Path("/var/tmp"), "tmpfs": Path("/dev/shm")}
REPO = "starling-bench/big"
TAG = "v1"
SEED = 20240601
# Headroom on top of the layers that must fit at once, for metadata and logs.
SPACE_MARGIN_BYTES = 512 * MiB
# A transfer slower than this is taken as hung.
SLOWEST_BPS = 5 * MB
# How long the machine's idle share is sampled before and after the run.
QUIET_CHECK_S = 1.0
# Failures of one round that are recorded (and the run goes on) rather than raised.
ROUND_FAILURES = (
    BenchError,
    OSError,
    RuntimeError,
    TimeoutError,
    ValueError,
    subprocess.SubprocessError,
)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Setup:
    registry: RegistryProcess
    image: PushedImage
    timeout_s: float
    repeats: dict[str, int]

    @property
    def size_bytes(self) -> int:
        return self.image.layers[0][1]


class KindRun:
    """Every measurement for one kind of data dir, with all files under ``base``."""

    def __init__(self, kind: str, base: Path, setup: Setup) -> None:
        self.kind = kind
        self.base = base
        self.setup = setup
        self.results = {
            method: {path: PathResult() for path in PATHS}
            for method, repeats in setup.repeats.items()
            if repeats > 0
        }
        self.peers: list[dict[str, Any]] = []
        self.cold_download_s: list[float] = []
        self.errors: list[str] = []
        self._dirs = 0

    def run(self) -> None:
        rounds = {
            "raw_get": self._raw_round,
            "ctr_fetch": self._ctr_round,
            "ctr_pull": self._ctr_round,
        }
        for method in self.results:
            for repeat in range(self.setup.repeats[method]):
                try:
                    rounds[method](method)
                except ROUND_FAILURES as exc:
                    message = f"{self.kind} {METHOD_TITLES[method]} round {repeat + 1}: {exc}"
                    _progress(f"  FAILED {message}")
                    self.errors.append(message)

    def _dir(self, what: str) -> Path:
        self._dirs += 1
        return self.base / f"{self._dirs:02d}-{what}"

    @contextlib.contextmanager
    def _peer(self, method: str) -> Iterator[PeerDaemon]:
        """A new peer with an empty data dir; its memory is recorded when done."""
        peer_dir = self._dir(f"peer-{method}")
        quota = max(20 * GiB, 2 * self.setup.size_bytes)
        peer = PeerDaemon(peer_dir, self.setup.registry.host, quota).start()
        try:
            at_start = peer.memory()["rss_bytes"]
            yield peer
            memory = peer.memory()
            self.peers.append({"used_for": method, "rss_at_start_bytes": at_start, **memory})
            _progress(f"    peer peak RSS {format_size(memory['peak_rss_bytes'])}")
        except Exception:
            _progress(f"    peer log, last lines:\n{peer.log_tail()}")
            raise
        finally:
            peer.stop()
            shutil.rmtree(peer_dir, ignore_errors=True)

    def _measure(
        self, method: str, path: str, peer: PeerDaemon | None, transfer: Callable[[], Sample]
    ) -> None:
        """Time one transfer; through a peer, check from its metrics that it served it."""
        before = peer.metrics() if peer is not None else {}
        meter = CpuMeter(peer.pid if peer is not None else None)
        sample = meter.stop(transfer())
        if peer is not None:
            download_s = check_served(peer.metrics(), before, self.setup.size_bytes, path)
            if download_s is not None:
                self.cold_download_s.append(round_(download_s))
        self.results[method][path].samples.append(sample)
        cpu = f", peer CPU {sample.peer_cpu_s:.2f}s" if sample.peer_cpu_s is not None else ""
        _progress(
            f"  {self.kind} {METHOD_TITLES[method]} {path}: {sample.seconds:.2f}s, "
            f"{sample.mb_per_s:.0f} MB/s{cpu}"
        )

    def _raw_round(self, method: str) -> None:
        setup = self.setup
        size, timeout_s = setup.size_bytes, setup.timeout_s
        blob_path = f"/v2/{setup.image.repo}/blobs/{setup.image.layers[0][0]}"
        direct_url = setup.registry.url + blob_path

        def direct() -> None:
            self._measure(method, "direct", None, lambda: curl_get(direct_url, size, timeout_s))

        direct()
        with self._peer(method) as peer:
            url = f"{peer.url}{blob_path}?ns={setup.registry.host}"
            for path in ("cold", "warm"):
                self._measure(method, path, peer, lambda: curl_get(url, size, timeout_s))
                peer.wait_idle(blobs=1)
        direct()  # again, after the peer's runs (see the module docstring)

    def _ctr_round(self, method: str) -> None:
        setup = self.setup
        registry = setup.registry
        hosts = self._dir("hosts")

        def transfer(hosts_dir: Path, peer: PeerDaemon | None, path: str) -> Sample:
            # The meter starts once containerd is up: its start-up is not the transfer.
            work_dir = self._dir(f"containerd-{path}")
            try:
                return ctr_transfer(
                    work_dir,
                    setup.image,
                    hosts_dir,
                    setup.timeout_s,
                    lambda: CpuMeter(peer.pid if peer is not None else None),
                    unpack=method == "ctr_pull",
                )
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)

        try:
            direct_hosts = hosts / "direct"
            write_hosts_toml(direct_hosts, registry.host, [], server_url=registry.url)

            def direct() -> None:
                self._measure(
                    method, "direct", None, lambda: transfer(direct_hosts, None, "direct")
                )

            direct()
            with self._peer(method) as peer:
                peer_hosts = hosts / "peer"
                write_hosts_toml(peer_hosts, registry.host, [peer.url], server_url=peer.url)
                for path in ("cold", "warm"):
                    self._measure(
                        method, path, peer, functools.partial(transfer, peer_hosts, peer, path)
                    )
                    peer.wait_idle(blobs=2)  # the layer and the image config
            direct()  # again, after the peer's runs (see the module docstring)
        finally:
            shutil.rmtree(hosts, ignore_errors=True)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data_dir_base": str(self.base)}
        for method, paths in self.results.items():
            out[method] = method_json(paths)
        peaks = [peer["peak_rss_bytes"] for peer in self.peers]
        out["peer_peak_rss_bytes"] = max(peaks) if peaks else None
        out["peers"] = self.peers
        out["peer_cold_download_s"] = self.cold_download_s
        out["errors"] = self.errors
        return out


def space_problem(base: Path, need_bytes: int, in_ram: bool) -> str | None:
    """Why ``base`` cannot hold ``need_bytes`` now, or None."""
    if not base.is_dir():
        return f"{base} does not exist"
    free = shutil.disk_usage(base).free
    if free < need_bytes:
        return f"{base} has {format_size(free)} free, the run needs {format_size(need_bytes)}"
    available = meminfo().get("MemAvailable", 0)
    if in_ram and available < need_bytes:
        return (
            f"{base} is tmpfs (RAM) and only {format_size(available)} of memory is available, "
            f"the run needs {format_size(need_bytes)}"
        )
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mirror_bench",
        description="Time one big layer straight from a registry and through a cold and a "
        "warm p2p-peer, by raw HTTP GET, ctr content fetch and ctr images pull.",
    )
    parser.add_argument(
        "--layer-size", default=DEFAULT_LAYER_SIZE, help="size of the layer (default 1GiB)"
    )
    parser.add_argument(
        "--data-dir-kind",
        choices=["disk", "tmpfs", "both"],
        default="both",
        help="where the peer and containerd keep data: /var/tmp, /dev/shm or both (default)",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    for method, default in (("raw_get", 3), ("ctr_fetch", 3), ("ctr_pull", 3)):
        parser.add_argument(
            f"--{method.replace('_', '-')}-repeats",
            type=int,
            default=default,
            metavar="N",
            help=f"rounds of direct, cold and warm {METHOD_TITLES[method]}, each round with "
            f"a new peer; 0 skips it (default {default})",
        )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the work dirs and logs for post-mortems"
    )
    return parser


def _cannot_run(size_bytes: int, kinds: list[str]) -> str | None:
    if size_bytes < MiB:
        return "--layer-size must be at least 1MiB"
    for reason in (registry_unavailable_reason(), containerd_unavailable_reason()):
        if reason:
            return reason
    if shutil.which("curl") is None:
        return "curl is not installed"
    # The registry's copy and the image being built; with disk, also the disk kind's data.
    need = (
        2 * size_bytes
        + SPACE_MARGIN_BYTES
        + (_per_kind_bytes(size_bytes) if "disk" in kinds else 0)
    )
    return space_problem(KIND_BASES["disk"], need, in_ram=False)


def _per_kind_bytes(size_bytes: int) -> int:
    # The peer's copy, containerd's content store and its unpacked snapshot.
    return 3 * size_bytes + SPACE_MARGIN_BYTES


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    size_bytes = parse_size(args.layer_size)
    kinds = list(KIND_BASES) if args.data_dir_kind == "both" else [args.data_dir_kind]
    if reason := _cannot_run(size_bytes, kinds):
        print(f"cannot run the benchmark: {reason}", file=sys.stderr)
        return 2
    # A TERM (a timeout, CI) still runs the finally blocks that stop every process.
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    repeats = {
        "raw_get": args.raw_get_repeats,
        "ctr_fetch": args.ctr_fetch_repeats,
        "ctr_pull": args.ctr_pull_repeats,
    }

    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    # Each peer imports the code when it starts: note it now, and whether it changed by the end.
    code = code_state()
    host: dict[str, Any] = {"load_average_before": load_average()}
    host["busy_before"] = round_(host_busy_over(QUIET_CHECK_S), 3)
    memory = meminfo()
    # tmpfs files left by others hold RAM the tmpfs kind then misses (see render_table).
    host["shmem_before_bytes"] = memory.get("Shmem", 0)
    host["mem_available_before_bytes"] = memory.get("MemAvailable", 0)
    sha256_rate = sha256_bytes_per_s()  # on the quiet machine, before anything runs
    shared = Path(tempfile.mkdtemp(prefix="starling-bench-", dir=KIND_BASES["disk"]))
    registry = RegistryProcess(shared / "registry")
    kind_dirs: list[Path] = []
    kinds_out: dict[str, Any] = {}
    setup_out: dict[str, Any] = {}
    try:
        registry.start()
        _progress(f"building and pushing a {format_size(size_bytes)} layer ...")
        image = push_image(registry.url, REPO, TAG, [size_bytes], SEED, work_dir=shared / "image")
        setup_out["build_and_push_s"] = round_(time.monotonic() - started, 2)
        image.cleanup()  # The registry has its copy; this one would only take space.
        setup_out.update(reference=image.reference, layer_digest=image.layers[0][0])
        setup = Setup(registry, image, 120 + size_bytes / SLOWEST_BPS, repeats)
        for kind in kinds:
            base = KIND_BASES[kind]
            if kind == "tmpfs" and (
                problem := space_problem(base, _per_kind_bytes(size_bytes), True)
            ):
                _progress(f"skipping tmpfs: {problem}")
                kinds_out[kind] = {"skipped": problem}
                continue
            kind_dir = Path(tempfile.mkdtemp(prefix=f"starling-bench-{kind}-", dir=base))
            kind_dirs.append(kind_dir)
            _progress(f"measuring with the data dirs on {kind} ({kind_dir}) ...")
            run = KindRun(kind, kind_dir, setup)
            try:
                run.run()
            finally:
                kinds_out[kind] = run.to_json()
    finally:
        registry.stop()
        if not args.keep_work:
            for directory in (*kind_dirs, shared):
                shutil.rmtree(directory, ignore_errors=True)
    host["busy_after"] = round_(host_busy_over(QUIET_CHECK_S), 3)
    host["load_average_after"] = load_average()

    report: dict[str, Any] = {
        "command": shlex.join(sys.orig_argv),
        "date": started_at.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "host": host,
        "code": code,
        "code_changed_during_run": code_state()["sources_sha256"] != code["sources_sha256"],
        "layer_size_bytes": image.layers[0][1],
        "layer_size": format_size(image.layers[0][1]),
        "units": {
            "seconds": "wall-clock seconds of the transfer, median over the samples",
            "mb_per_s": "10^6 bytes per second",
            "ratio_*_vs_direct": "throughput relative to direct (direct seconds / seconds)",
            "peer_cpu_s": "CPU seconds of the peer process (all threads) during the transfer",
            "host_cpu_busy": "share of all CPUs busy during the transfer (0..1)",
            "peer_peak_rss_bytes": "VmHWM of the peer process, max over the kind's peers",
            "host.busy_before": "share of all CPUs busy for 1 s before the run: other load",
            "host.shmem_before_bytes": "tmpfs (RAM) in use before the run, by other files",
        },
        "methods": {
            "raw_get": "curl -o /dev/null of the layer's blob URL; status and byte count checked",
            "ctr_fetch": "ctr content fetch by a fresh containerd: download only",
            "ctr_pull": "ctr images pull --snapshotter native by a fresh containerd: "
            "download and unpack",
            "peer_paths": "containerd's hosts.toml names only the peer (no registry fallback)",
        },
        "repeats": repeats,
        "setup": setup_out,
        "kinds": kinds_out,
        "duration_s": round_(time.monotonic() - started, 1),
    }
    report["cold_ceiling"] = cold_ceiling(kinds_out, image.layers[0][1], sha256_rate)
    report["targets"] = target_check(kinds_out)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(render_table(report))
    print(f"\nwrote {out}")
    return 1 if any(kind.get("errors") for kind in kinds_out.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
