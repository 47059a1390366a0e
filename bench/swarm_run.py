"""One swarm benchmark run: the nodes, the registry and image, the two modes of pulling.

:class:`SwarmRun` sets up the network (:mod:`bench.swarm_net`), the registry and the
image, checks that the shapers hold, and then measures a round of each mode: ``p2p``
(scheduler, seed and peers fresh, every node pulling through its own mirror) and
``direct`` (the same N nodes pulling straight from the registry). Each round returns
the figures of :func:`bench.swarm_report.summarise_round` plus link and CPU use.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.report import REPO_ROOT, round_
from bench.swarm_net import (
    LoopbackNetwork,
    NamespaceNetwork,
    Network,
    NetworkError,
    Node,
    NodeSpec,
    Rack,
    Shaping,
)
from bench.swarm_nodes import (
    CLIENT_CONCURRENCY,
    REPO,
    TAG,
    TOKEN,
    Daemon,
    Image,
    PhaseSampler,
    PullClient,
    child_env,
    parse_metrics,
    peer_config,
    registry_config,
    start_daemon,
    start_pull_client,
)
from bench.swarm_report import RoundCounters, summarise_round
from tests.support.processes import ProcessFailed
from tests.support.registry import REGISTRY_BINARY, registry_unavailable_reason

MiB = 1024**2
MBIT = 1_000_000  # bits per second in one Mbit/s
SEED = 20240603
# A typical image: one big base layer and ever smaller ones on top.
LAYER_SHARES = (0.5, 0.25, 0.125, 0.0625, 0.0625)
START_TIMEOUT_S = 60.0
# How long peers may go on downloading after every client is done.
IDLE_TIMEOUT_S = 120.0
# How long each shaping check moves data for.
CHECK_SECONDS = 1.5
# Topology labels of racked peers: one data centre; location "a|b|c", most general first.
IDC = "dc-1"
LOCATION_PREFIX = "region-1|dc-1"
ACCESS_LOG = re.compile(
    r'"GET /v2/\S+/blobs/(?P<digest>sha256:[0-9a-f]{64})\S* HTTP/[0-9.]+" '
    r"(?P<status>\d{3}) (?P<bytes>\d+)"
)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SwarmRun:
    def __init__(self, args: argparse.Namespace, network: Network, work: Path) -> None:
        self.args = args
        self.network = network
        self.work = work
        self.nodes: dict[str, Node] = {}
        self.registry: Daemon | None = None
        self.image: Image | None = None
        self.racks: dict[str, Rack] = {}
        self.warnings: list[str] = []

    # Set-up -------------------------------------------------------------------------

    def layout(self) -> tuple[list[NodeSpec], list[Rack]]:
        """The nodes (registry, scheduler, seed, peers) and racks: here one flat network."""
        a = self.args
        specs = [
            NodeSpec("registry", Shaping(up_bps=a.registry_egress_mbps * MBIT)),
            NodeSpec("scheduler", Shaping()),
            NodeSpec("seed", Shaping(a.seed_up_mbps * MBIT, a.seed_down_mbps * MBIT)),
        ]
        specs += [
            NodeSpec(f"peer{i:02d}", Shaping(a.peer_up_mbps * MBIT, a.peer_down_mbps * MBIT))
            for i in range(a.peers)
        ]
        return specs, []

    def build_network(self) -> None:
        specs, racks = self.layout()
        for node in self.network.setup(specs, racks):
            self.nodes[node.name] = node
        self.racks = {rack.name: rack for rack in racks}

    def path_limit_bps(self, source: Node, sink: Node) -> float:
        """The slowest shaper between two nodes: upload, uplinks when racks differ, download."""
        limits = [source.shaping.up_bps, sink.shaping.down_bps]
        if source.rack != sink.rack:
            if rack := self.racks.get(source.rack):
                limits.append(rack.uplink.up_bps)
            if rack := self.racks.get(sink.rack):
                limits.append(rack.uplink.down_bps)
        return min(limit for limit in limits if limit)

    def shaping_paths(self) -> list[tuple[str, Node, Node]]:
        """Where :meth:`check_shaping` moves data: registry to a peer, peer to peer."""
        first = self.nodes["peer00"]
        second = self.nodes["peer01"] if self.args.peers > 1 else self.nodes["seed"]
        return [
            ("registry -> peer00", self.nodes["registry"], first),
            (f"peer00 -> {second.name}", first, second),
        ]

    @property
    def peers(self) -> list[Node]:
        return [self.nodes[f"peer{i:02d}"] for i in range(self.args.peers)]

    @property
    def registry_host(self) -> str:
        node = self.nodes["registry"]
        return f"{node.address}:{node.ports['registry']}"

    def start_registry(self) -> None:
        if shutil.which(REGISTRY_BINARY) is None:
            raise ProcessFailed(registry_unavailable_reason() or "no registry")
        node = self.nodes["registry"]
        work = self.work / "registry"
        work.mkdir(parents=True)
        config_path = work / "config.yml"
        config_path.write_text(yaml.safe_dump(registry_config(node, work / "storage")))
        self.registry = start_daemon(
            "registry", node, [REGISTRY_BINARY, "serve", str(config_path)], work
        )
        node.wait_http(f"{node.url('registry')}/v2/", START_TIMEOUT_S, self.registry.check_alive)

    def push_image(self) -> None:
        """Build the image and push it from the registry's own node (not shaped)."""
        total = self.args.image_mib * MiB
        sizes = [max(4096, int(total * share)) for share in LAYER_SHARES]
        sizes[0] += total - sum(sizes)
        node = self.nodes["registry"]
        argv = [sys.executable, "-m", "bench.swarm_client", "push"]
        argv += ["--registry", node.url("registry"), "--repo", REPO, "--tag", TAG]
        argv += ["--layer-bytes", ",".join(map(str, sizes)), "--seed", str(SEED)]
        argv += ["--work-dir", str(self.work / "image")]
        result = subprocess.run(
            node.argv(argv), capture_output=True, cwd=REPO_ROOT, env=child_env(), timeout=600
        )
        if result.returncode != 0:
            raise RuntimeError(f"push failed: {result.stderr.decode(errors='replace')[-2000:]}")
        pushed = json.loads(result.stdout.decode().strip().splitlines()[-1])
        self.image = Image(
            [(d, int(s)) for d, s in pushed["layers"]],
            (pushed["config"][0], int(pushed["config"][1])),
            pushed["manifest_digest"],
        )

    def check_shaping(self) -> list[dict[str, Any]]:
        """Move zeros over two shaped paths; the rate must match the shapers' limits."""
        if not isinstance(self.network, NamespaceNetwork):
            return []
        checks = []
        for label, source, sink in self.shaping_paths():
            limit_mbps = self.path_limit_bps(source, sink) / MBIT
            size = int(limit_mbps * MBIT / 8 * CHECK_SECONDS)
            endpoint = f"{source.address}:7999"
            base = [sys.executable, "-m", "bench.swarm_client"]
            server = subprocess.Popen(
                source.argv([*base, "source", "--listen", endpoint, "--bytes", str(size)]),
                stdout=subprocess.PIPE,
                cwd=REPO_ROOT,
                env=child_env(),
                start_new_session=True,
            )
            try:
                assert server.stdout is not None
                server.stdout.readline()  # ready
                got = subprocess.run(
                    sink.argv([*base, "sink", "--connect", endpoint]),
                    capture_output=True,
                    cwd=REPO_ROOT,
                    env=child_env(),
                    timeout=60,
                    check=True,
                )
            finally:
                if server.poll() is None:
                    server.kill()
                server.wait()
            measured = json.loads(got.stdout)
            mbps = measured["bytes"] * 8 / measured["seconds"] / MBIT if measured["seconds"] else 0
            share = mbps / limit_mbps
            checks.append(
                {
                    "path": label,
                    "limit_mbps": limit_mbps,
                    "measured_payload_mbps": round_(mbps, 2),
                    "share_of_limit": round_(share, 3),
                }
            )
            progress(f"  shaping check {label}: {mbps:.1f} of {limit_mbps:g} Mbit/s")
            if not 0.5 <= share <= 1.1:
                raise NetworkError(
                    f"shaping check {label}: {mbps:.1f} Mbit/s against a limit of "
                    f"{limit_mbps:g}: the shapers do not work as set up"
                )
        return checks

    # Phases ---------------------------------------------------------------------------

    def p2p_round(self, round_no: int) -> dict[str, Any]:
        """Scheduler, seed and peers fresh; every node pulls through its own mirror."""
        assert self.image is not None
        work = self._round_dir(round_no, "p2p")
        daemons: list[Daemon] = []
        clients: list[PullClient] = []
        try:
            scheduler = self._start_scheduler(work)
            daemons.append(scheduler)
            peers = [self._start_peer(node, work) for node in (self.nodes["seed"], *self.peers)]
            daemons += peers
            for peer in peers:
                peer.node.wait_http(
                    f"{mirror_url(peer.node)}/healthz", START_TIMEOUT_S, peer.check_alive
                )
            self._wait_hosts(scheduler, len(peers))
            for peer in peers:
                # Like containerd with deploy/containerd/hosts.toml: the node's mirror
                # first, the registry for a blob the mirror answers with an error; or,
                # with --no-fallback, the mirror again until the pull succeeds.
                fallback = "" if self.args.no_fallback else self.nodes["registry"].url("registry")
                clients.append(
                    self._client(
                        peer.node, mirror_url(peer.node), self.registry_host, work, fallback
                    )
                )
            result = self._measure("p2p", clients, daemons)
            if problems := _log_problems(peers):
                listed = ", ".join(f"{name} {count}" for name, count in problems.items())
                self.warnings.append(f"p2p: WARNING/ERROR lines in peer logs: {listed}")
            return result
        finally:
            for client in clients:
                client.kill()
            # Peers first: a scheduler gone before them makes them log that it is down.
            for daemon in reversed(daemons):
                daemon.stop()
            if not self.args.keep_work:
                for data_dir in work.glob("*/data"):
                    shutil.rmtree(data_dir, ignore_errors=True)

    def direct_round(self, round_no: int) -> dict[str, Any]:
        """No peers running: the same N nodes pull straight from the registry."""
        work = self._round_dir(round_no, "direct")
        registry_url = self.nodes["registry"].url("registry")
        clients: list[PullClient] = []
        try:
            for node in self.peers:
                clients.append(self._client(node, registry_url, "", work))
            return self._measure("direct", clients, [])
        finally:
            for client in clients:
                client.kill()

    def _round_dir(self, round_no: int, mode: str) -> Path:
        path = self.work / f"round{round_no}-{mode}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def scheduling(self) -> dict[str, Any]:
        """The scheduler's ``scheduling:`` settings; empty: its defaults."""
        return {}

    def _start_scheduler(self, work: Path) -> Daemon:
        node = self.nodes["scheduler"]
        listen = f"{node.address}:{node.ports['scheduler']}"
        argv = [sys.executable, "-m", "scheduler.service.cli", "--listen", listen]
        if scheduling := self.scheduling():
            config_path = work / "scheduler.yaml"
            config_path.write_text(yaml.safe_dump({"scheduling": scheduling}))
            argv += ["--config", str(config_path)]
        daemon = start_daemon("scheduler", node, argv, work, env={"STARLING_TOKEN": TOKEN})
        node.wait_http(f"{node.url('scheduler')}/healthz", START_TIMEOUT_S, daemon.check_alive)
        return daemon

    def _start_peer(self, node: Node, work: Path) -> Daemon:
        node_dir = work / node.name
        node_dir.mkdir()
        min_piece = self.args.min_piece_mib
        config = peer_config(
            node,
            node_dir,
            self.nodes["scheduler"],
            self.nodes["registry"],
            seed=node.name == "seed",
            in_app_upload=isinstance(self.network, LoopbackNetwork),
            min_piece_bytes=min_piece * MiB if min_piece else None,
        )
        if node.rack:
            # Topology labels, as the operator would set them (and p2psim announces them).
            config.update(rack=node.rack, idc=IDC, location=f"{LOCATION_PREFIX}|{node.rack}")
        config_path = node_dir / "peer.yaml"
        config_path.write_text(yaml.safe_dump(config))
        argv = [sys.executable, "-m", "peer.cli", "--config", str(config_path)]
        return start_daemon(node.name, node, argv, node_dir)

    def _wait_hosts(self, scheduler: Daemon, count: int) -> None:
        """Until the scheduler knows every peer's host (the seed's above all)."""
        node = scheduler.node
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            status, body = node.http_get(f"{node.url('scheduler')}/healthz")
            if status == 200 and json.loads(body).get("hosts", 0) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler knows fewer than {count} hosts: {body!r}")
            time.sleep(0.2)

    def _client(self, node: Node, base: str, ns: str, work: Path, fallback: str = "") -> PullClient:
        assert self.image is not None
        log_path = work / f"client-{node.name}.log"
        blobs = self.image.blobs_arg()
        retry = self.args.no_fallback and base != self.nodes["registry"].url("registry")
        return start_pull_client(
            node,
            base,
            ns,
            fallback,
            blobs,
            self._timeout_s(),
            log_path,
            retry=retry,
            concurrency=self.client_concurrency(node),
        )

    def client_concurrency(self, node: Node) -> int:
        """Blobs a node's client pulls at once: containerd's default on every node."""
        return CLIENT_CONCURRENCY

    def _timeout_s(self) -> float:
        a = self.args
        assert self.image is not None
        # Generous: three times the direct pulls' own lower bound, plus start-up slack.
        direct_s = a.peers * self.image.total_bytes * 8 / (a.registry_egress_mbps * MBIT)
        return float(3 * direct_s + 120)

    def _measure(
        self, mode: str, clients: list[PullClient], daemons: list[Daemon]
    ) -> dict[str, Any]:
        """Start every client at once, wait for all, and gather what was counted."""
        assert self.image is not None and self.registry is not None
        everyone = [self.registry, *daemons]
        cpu_before = {d.name: d.cpu_s() for d in everyone}
        log_offset = self.registry.log_path.stat().st_size
        tx_before = self.network.tx_bytes(self.nodes["registry"])
        qdiscs_before = self.network.qdisc_stats()
        t0, sampler = self._pull_all(clients, self._timeout_s())
        cpu = sampler.stop()
        cpu_pulls = {d.name: d.cpu_s() for d in everyone}
        # Downloads a peer went on with after its client gave up still cost the registry:
        # count them too, once every peer is idle.
        cpu["idle_wait_s"] = self._wait_idle([d for d in daemons if d.name != "scheduler"])
        tx_after = self.network.tx_bytes(self.nodes["registry"])
        qdiscs_after = self.network.qdisc_stats()
        cpu["process_cpu_s"] = {
            d.name: round_((cpu_pulls[d.name] or 0.0) - (cpu_before[d.name] or 0.0), 2)
            for d in everyone
        }
        blob_bytes, gets, by_digest = registry_blob_bytes(self.registry.log_path, log_offset)
        counters = RoundCounters(
            registry_blob_bytes=blob_bytes,
            registry_blob_gets=gets,
            registry_bytes_by_digest=by_digest,
            registry_tx_bytes=tx_after - tx_before
            if tx_after is not None and tx_before is not None
            else None,
            qdiscs=_qdisc_delta(qdiscs_before, qdiscs_after),
        )
        metrics = {d.name: self._metrics(d.node, _metrics_url(d)) for d in daemons}
        results = self._results(clients, t0)
        for result in results:
            if not result["ok"]:
                self.warnings.append(f"{mode}: {result['node']} failed: {result.get('errors')}")
        # CPU time of the machine not spent by the benchmark's own processes: other load,
        # and kernel work (shaping, softirqs) not charged to a process.
        own_s = sum(cpu["process_cpu_s"].values()) + sum(
            r.get("client_cpu_s") or 0.0 for r in results
        )
        cpu["benchmark_processes_cpu_s"] = round_(own_s, 2)
        cpu["host_busy_cpu_s"] = round_(
            cpu["host_cpu_busy"] * (os.cpu_count() or 1) * cpu["window_s"], 2
        )
        entry = summarise_round(mode, results, self.image.total_bytes, counters, cpu, metrics)
        entry["links"] = self._link_use(sampler, entry["max_s"])
        return entry

    def _link_use(self, sampler: PhaseSampler, seconds: float | None) -> dict[str, Any]:
        """How much of each kind of link's capacity the pulls used, until the last one."""
        totals = sampler.link_totals()
        if not totals or not seconds:
            return {}
        peers = self.peers
        registry, seed = self.nodes["registry"], self.nodes["seed"]
        up = {
            "registry": (totals["registry"][0], registry.shaping.up_bps or 0.0),
            "seed": (totals["seed"][0], seed.shaping.up_bps or 0.0),
            "peers": (
                sum(totals[p.name][0] for p in peers),
                sum(p.shaping.up_bps or 0.0 for p in peers),
            ),
        }
        use = {
            f"{name}_upload_used": round_(sent / (bps / 8 * seconds), 3) if bps else None
            for name, (sent, bps) in up.items()
        }
        received = sum(totals[p.name][1] for p in peers)
        down_bps = sum(p.shaping.down_bps or 0.0 for p in peers)
        use["peers_download_used"] = (
            round_(received / (down_bps / 8 * seconds), 3) if down_bps else None
        )
        return {
            "note": "bytes through each kind of link (Ethernet frames) over its capacity, "
            "from the go signal until the last normal peer finished",
            **use,
            "bytes_by_node": {name: {"up": u, "down": d} for name, (u, d) in totals.items()},
            "timeline": sampler.timeline,
        }

    def _wait_idle(self, peers: list[Daemon]) -> float | None:
        """Seconds until no peer has a download running; None if that took too long."""
        started = time.monotonic()
        waiting = list(peers)
        while waiting:
            waiting = [
                peer
                for peer in waiting
                if (health := peer.node.http_get(f"{mirror_url(peer.node)}/healthz"))[0] != 200
                or json.loads(health[1]).get("tasks_active", 1) > 0
            ]
            if not waiting:
                break
            if time.monotonic() - started > IDLE_TIMEOUT_S:
                names = ", ".join(peer.name for peer in waiting)
                self.warnings.append(f"peers still downloading after the pulls: {names}")
                return None
            time.sleep(0.5)
        return round(time.monotonic() - started, 2)

    def _pull_all(self, clients: list[PullClient], timeout_s: float) -> tuple[float, PhaseSampler]:
        """Wait for every client's ready, send go to all, wait for the results."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for client in clients:
            if not client.ready.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"client on {client.node.name} did not get ready")
        sampler = PhaseSampler(self.network.link_bytes).start()
        t0 = time.monotonic()
        for client in clients:
            client.go()
        deadline = t0 + timeout_s
        for client in clients:
            if not client.finished.wait(max(0.0, deadline - time.monotonic())):
                progress(f"  client on {client.node.name} timed out")
                client.kill()
                client.finished.wait(10)
        return t0, sampler

    def _results(self, clients: list[PullClient], t0: float) -> list[dict[str, Any]]:
        out = []
        for client in clients:
            result = client.result or {"ok": False, "errors": ["no result (died or timed out)"]}
            entry: dict[str, Any] = {"node": client.node.name, "ok": bool(result.get("ok"))}
            if "done_monotonic" in result:
                entry["completion_s"] = round_(result["done_monotonic"] - t0)
                entry["go_skew_s"] = round_(result["go_monotonic"] - t0)
                entry["manifest_s"] = result.get("manifest_s")
                entry["bytes"] = result.get("bytes")
                entry["client_cpu_s"] = result.get("cpu_s")
                blobs = result.get("blobs", [])
                entry["blobs"] = [
                    {
                        k: b.get(k)
                        for k in ("digest", "start_s", "end_s", "bytes", "bytes_by_source", "ok")
                    }
                    for b in blobs
                ]
                entry["bytes_by_source"] = {
                    source: sum(b["bytes_by_source"].get(source, 0) for b in blobs)
                    for source in ("base", "fallback")
                }
                entry["fallback_blobs"] = sum(
                    1 for b in blobs if b["bytes_by_source"].get("fallback")
                )
                problems = [e for b in blobs for e in b.get("attempt_errors", [])]
                if problems:
                    entry["attempt_errors"] = problems[:10]
            if result.get("errors"):
                entry["errors"] = result["errors"]
            out.append(entry)
        return out

    def _metrics(self, node: Node, url: str) -> dict[str, float]:
        status, body = node.http_get(url)
        if status != 200:
            self.warnings.append(f"no metrics from {node.name} ({status})")
            return {}
        return {k: v for k, v in parse_metrics(body.decode()).items() if k.startswith("p2p_")}


def mirror_url(node: Node) -> str:
    """The node's mirror, as a client on that node reaches it."""
    return f"http://127.0.0.1:{node.ports['mirror']}"


def _metrics_url(daemon: Daemon) -> str:
    if daemon.name == "scheduler":
        return f"{daemon.node.url('scheduler')}/metrics"
    return f"{mirror_url(daemon.node)}/metrics"


def registry_blob_bytes(log_path: Path, offset: int) -> tuple[int, int, dict[str, int]]:
    """Body bytes and count of blob GETs (200/206) in the registry's access log."""
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    by_digest: dict[str, int] = {}
    gets = 0
    for match in ACCESS_LOG.finditer(text):
        if match["status"] in ("200", "206"):
            gets += 1
            by_digest[match["digest"]] = by_digest.get(match["digest"], 0) + int(match["bytes"])
    return sum(by_digest.values()), gets, by_digest


def _qdisc_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        label: {k: v - before.get(label, {}).get(k, 0) for k, v in stats.items()}
        for label, stats in after.items()
    }


def _log_problems(daemons: list[Daemon]) -> dict[str, int]:
    """WARNING and ERROR lines in each daemon's log, where there are any."""
    found = {}
    for daemon in daemons:
        try:
            text = daemon.log_path.read_text(errors="replace")
        except OSError:
            continue
        count = sum(1 for line in text.splitlines() if " WARNING " in line or " ERROR " in line)
        if count:
            found[daemon.name] = count
    return found
