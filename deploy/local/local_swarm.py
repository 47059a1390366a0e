"""A Starling swarm of real processes on loopback, for `make demo`.

A CNCF distribution registry behind a counting proxy (every blob byte the registry sends
is counted), ``p2p-scheduler``, one seed peer (``p2p-peer --seed``) and a few normal
peers, each with its own data dir and, when this machine can run it, its own private
containerd whose ``hosts.toml`` names that peer as its mirror. The seed and every node
then pull the same image at the same instant, and what each got from where is read back
from the peers' ``/metrics``.

The process helpers are the end-to-end tests' own (``tests/e2e``, ``tests/support``), so
the demo runs exactly what the tests run.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.conftest import PeerProcess, SchedulerProcess, metric_value
from tests.e2e.swarm_helpers import PULL_TIMEOUT_S, bytes_by_source, peer_settings, pull
from tests.support.containerd import ContainerdProcess, write_hosts_toml
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.registry import RegistryProcess

IMAGE_REPO = "demo/app"
IMAGE_TAG = "v1"
IMAGE_SEED = 42  # the generated layers' bytes, hence their digests, are fixed by it
SEED_NAME = "seed"
HASH_CHUNK_BYTES = 1 << 20


@dataclass
class NodeResult:
    """One pull: who pulled, how, how long it took and where its bytes came from."""

    name: str
    client: str  # "containerd" (ctr images pull) or "http" (GET of every blob)
    ok: bool = False
    seconds: float = 0.0
    error: str = ""
    digests_ok: int = 0
    digests_total: int = 0
    from_origin_bytes: float = 0.0
    from_peer_bytes: float = 0.0
    from_seed_bytes: float = 0.0
    uploaded_bytes: float = 0.0
    log_path: str = ""


@dataclass
class SchedulerCounts:
    parent_decisions: float = 0.0
    back_to_source_decisions: float = 0.0
    retry_later_decisions: float = 0.0


@dataclass
class SwarmRun:
    """What one simultaneous pull of the image measured."""

    image_reference: str
    image_bytes: int
    blob_count: int
    registry_blob_bytes: int  # counted by the proxy in front of the registry
    started_at: float  # time.monotonic() when the first pull started
    wall_seconds: float  # from the first pull's start to the last pull's end
    nodes: list[NodeResult] = field(default_factory=list)
    scheduler: SchedulerCounts = field(default_factory=SchedulerCounts)


class LocalSwarm:
    """Starts, drives and stops the swarm; ``stop()`` is safe at any point, and twice.

    ``work_dir`` holds every config and log; the bulky parts (registry storage, peers'
    caches, containerd content and snapshots, the built image) are deleted by ``stop()``.
    """

    def __init__(
        self,
        work_dir: Path,
        peer_count: int,
        containerd_count: int,
        layer_sizes: list[int],
    ) -> None:
        self.work_dir = work_dir
        self.peer_count = peer_count
        self.containerd_count = containerd_count
        self.layer_sizes = layer_sizes
        self.token = secrets.token_urlsafe(24)
        self.registry: RegistryProcess | None = None
        self.proxy: CountingProxy | None = None
        self.image: PushedImage | None = None
        self.scheduler: SchedulerProcess | None = None
        self.seed: PeerProcess | None = None
        self.peers: list[PeerProcess] = []
        self.containerds: dict[str, ContainerdProcess] = {}
        self.hosts_dirs: dict[str, Path] = {}
        # Clients (ctr) running now, killed by stop(); none starts after it began.
        self._children: set[subprocess.Popen[str]] = set()
        self._children_lock = threading.Lock()
        self._stopping = False
        # (what, log path) of everything started, for the summary and for failures.
        self.logs: list[tuple[str, Path]] = []

    # -- setup ----------------------------------------------------------------------

    def start_registry(self) -> PushedImage:
        self.registry = RegistryProcess(self.work_dir / "registry")
        self.registry.start()
        self.logs.append(("registry", self.registry.log_path))
        image = push_image(
            self.registry.url,
            IMAGE_REPO,
            IMAGE_TAG,
            self.layer_sizes,
            seed=IMAGE_SEED,
            work_dir=self.work_dir / "image",
        )
        self.image = image
        # Peers and containerd reach the registry only through this proxy, so every
        # blob byte the registry sends is counted, fallbacks included.
        self.proxy = CountingProxy(self.registry.url).start()
        return image

    def start_scheduler(self) -> SchedulerProcess:
        scheduler = SchedulerProcess(self.work_dir / "scheduler", self.token)
        self.logs.append(("p2p-scheduler", scheduler.log_path))
        self.scheduler = scheduler.start()
        return scheduler

    def start_peers(self) -> list[PeerProcess]:
        """The seed and the normal peers, started in parallel; returns the normal ones."""
        assert self.registry is not None and self.proxy is not None
        names = [SEED_NAME, *(f"node{i}" for i in range(1, self.peer_count + 1))]
        processes = []
        for name in names:
            settings = peer_settings(
                self.registry.host,
                self.proxy.url,
                self.scheduler,
                host_id=name,
                seed=name == SEED_NAME,
            )
            peer = PeerProcess(self.work_dir / name, settings)
            self.logs.append((f"p2p-peer {name}", peer.log_path))
            processes.append(peer)
        self.seed, self.peers = processes[0], processes[1:]
        _in_parallel([p.start for p in processes])
        return self.peers

    def start_containerds(self) -> dict[str, ContainerdProcess]:
        """A private containerd for each of the first ``containerd_count`` nodes, whose
        hosts.toml names that node's peer as the mirror and the registry (through the
        counting proxy) as the fallback."""
        assert self.registry is not None and self.proxy is not None
        for peer in self.peers[: self.containerd_count]:
            name = peer.work_dir.name
            containerd = ContainerdProcess(peer.work_dir / "containerd")
            self.containerds[name] = containerd
            self.logs.append((f"containerd {name}", containerd.log_path))
            hosts_dir = peer.work_dir / "certs.d"
            write_hosts_toml(hosts_dir, self.registry.host, [peer.url], server_url=self.proxy.url)
            self.hosts_dirs[name] = hosts_dir
        _in_parallel([c.start for c in self.containerds.values()])
        return self.containerds

    # -- the pull -------------------------------------------------------------------

    def pull_at_once(self) -> SwarmRun:
        """The seed and every node start pulling the image at the same instant."""
        assert self.image is not None and self.seed is not None and self.proxy is not None
        image = self.image
        everyone = [self.seed, *self.peers]
        results = [
            NodeResult(
                p.work_dir.name,
                "containerd" if p.work_dir.name in self.containerds else "http",
                digests_total=len(image.blob_digests),
                log_path=str(p.log_path),
            )
            for p in everyone
        ]
        barrier = threading.Barrier(len(everyone))
        spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(everyone)

        def run(index: int) -> None:
            peer, result = everyone[index], results[index]
            barrier.wait()
            started = time.monotonic()
            try:
                self._pull_one(peer, result)
            except Exception as exc:  # reported in the summary, not raised
                result.ok, result.error = False, f"{type(exc).__name__}: {exc}"
            ended = time.monotonic()
            result.seconds = ended - started
            spans[index] = (started, ended)

        # Daemon threads: on Ctrl-C the main thread stops the processes at once instead
        # of waiting for pulls that can no longer finish.
        threads = [
            threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(everyone))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for peer, result in zip(everyone, results, strict=True):
            sources = bytes_by_source(peer)
            result.from_origin_bytes = sources["origin"]
            result.from_peer_bytes = sources["peer"]
            result.from_seed_bytes = sources["seed"]
            result.uploaded_bytes = metric_value(peer.metrics(), "p2p_peer_upload_bytes_total")
        return SwarmRun(
            image_reference=image.reference,
            image_bytes=image.total_blob_bytes,
            blob_count=len(image.blob_digests),
            registry_blob_bytes=self.proxy.total_blob_bytes,
            started_at=min(start for start, _ in spans),
            wall_seconds=max(end for _, end in spans) - min(start for start, _ in spans),
            nodes=results,
            scheduler=self._scheduler_counts(),
        )

    def _pull_one(self, peer: PeerProcess, result: NodeResult) -> None:
        assert self.image is not None
        name = peer.work_dir.name
        containerd = self.containerds.get(name)
        if containerd is None:
            got = pull(peer, self.image)  # each body hashed as it streams in
            result.digests_ok = sum(got.get(d) == d for d in self.image.blob_digests)
        else:
            args = containerd.pull_args(self.image.reference, hosts_dir=self.hosts_dirs[name])
            status, stderr = self._run_child(containerd.ctr_argv(*args), PULL_TIMEOUT_S)
            if status != 0:
                result.error = f"ctr images pull exited with {status}: {stderr.strip()[-500:]}"
                return
            # containerd checked every blob against its digest before committing it;
            # hashing its content store again shows the bytes on disk are the image's.
            result.digests_ok = sum(
                _file_digest(containerd.content_path(d)) == d for d in self.image.blob_digests
            )
        result.ok = result.digests_ok == result.digests_total
        if not result.ok:
            result.error = f"{result.digests_total - result.digests_ok} blobs with a wrong digest"

    def _run_child(self, argv: list[str], timeout_s: float) -> tuple[int, str]:
        """Run ``argv`` to the end; ``stop()`` kills it if it is still running then.

        Returns the exit status and stderr. A child is never started once ``stop()`` has
        begun, so none outlives the demo.
        """
        with self._children_lock:
            if self._stopping:
                raise RuntimeError("the swarm is stopping")
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                # A Ctrl-C reaches the demo alone, which then stops every child itself:
                # a child dying first would turn the interruption into a failed step.
                start_new_session=True,
            )
            self._children.add(child)
        try:
            _, stderr = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            _, stderr = child.communicate()
            stderr += f"\n(killed after {timeout_s:.0f} s)"
        finally:
            with self._children_lock:
                self._children.discard(child)
        return child.returncode, stderr

    def _scheduler_counts(self) -> SchedulerCounts:
        assert self.scheduler is not None
        text = self.scheduler.metrics()

        def decisions(action: str) -> float:
            return metric_value(text, "p2p_scheduler_decisions_total", f'action="{action}"')

        return SchedulerCounts(
            parent_decisions=decisions("parents"),
            back_to_source_decisions=decisions("back_to_source"),
            retry_later_decisions=decisions("retry_later"),
        )

    # -- teardown -------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process; delete the bulky data, keep configs and logs."""
        with self._children_lock:
            self._stopping = True
            children = list(self._children)
        for child in children:
            child.kill()
            child.wait()
        for containerd in self.containerds.values():
            containerd.stop()
        for peer in [*self.peers, *([self.seed] if self.seed else [])]:
            peer.stop()
            shutil.rmtree(peer.data_dir, ignore_errors=True)
        if self.scheduler is not None:
            self.scheduler.kill()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.registry is not None:
            self.registry.stop()
        if self.image is not None:
            self.image.cleanup()
        shutil.rmtree(self.work_dir / "image", ignore_errors=True)


def _in_parallel(starts: list[Callable[[], object]]) -> None:
    """Run the ``start`` calls at once (each waits for its process to be ready); raise
    the first failure after all have returned, so none is left half-started unseen."""
    if not starts:
        return
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = [pool.submit(start) for start in starts]
    for future in futures:
        future.result()


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(HASH_CHUNK_BYTES):
                sha.update(chunk)
    except OSError:
        return "missing"
    return "sha256:" + sha.hexdigest()
