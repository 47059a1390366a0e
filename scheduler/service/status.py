"""The status page at ``/`` and the JSON it polls, ``GET /api/v1/status``.

The page (``static/status.html``, ``.js``, ``.css``) is served to anyone: it is the same
few kilobytes for every scheduler and holds no state. Everything it shows comes from
``/api/v1/status``, which reveals peer addresses and ports and so needs the cluster
token like the rest of ``/api/v1``. The page asks for the token when the JSON answers
401 and keeps it in the tab's ``sessionStorage``; a link ``/#token=...`` hands it over
in the URL fragment, which browsers never send to the server, and the page removes it
from the address bar at once. The page loads nothing from other hosts (a
Content-Security-Policy forbids it) so it works on an air-gapped cluster.

The snapshot is taken by one operation of the writer, like every other read of the
state, so it is consistent: no event lands halfway through it. Its cost grows with the
state, so it is bounded: the busiest ``MAX_TASKS`` tasks, ``MAX_PEERS_PER_TASK`` peers
each, ``MAX_HOSTS`` hosts (seeds first); the counts always cover everything, and
``*_truncated`` says when a list was cut. Throughput is in two forms: the cumulative
piece bytes peers reported, by source (the page turns two polls into a rate), and each
host's upload rate as the scheduler estimates it from children's reports (a 60 s
exponential average, ``scheduler.core.model.UPLOAD_WINDOW_S``), which a single call can
show.
"""

from __future__ import annotations

import importlib.resources
import random
import time
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from scheduler.core import PeerState, SchedulerState
from scheduler.core.model import UPLOAD_WINDOW_S, Host, Peer, Task
from scheduler.service.metrics import PIECE_SOURCES, SchedulerMetrics
from scheduler.service.writer import StateWriter

MAX_TASKS = 50
MAX_PEERS_PER_TASK = 200
MAX_HOSTS = 1000

# Served with every page asset: nothing from other origins, no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ASSETS = {
    "/": ("status.html", "text/html"),
    "/static/status.js": ("status.js", "text/javascript"),
    "/static/status.css": ("status.css", "text/css"),
}
# Peers are listed in this order: sources first, then the ones still downloading.
_PEER_ORDER = {PeerState.RUNNING: 1, PeerState.PENDING: 2, PeerState.SUCCEEDED: 3}


def _host_json(host: Host, now: float) -> dict[str, Any]:
    return {
        "host_id": host.host_id,
        "address": host.address,
        "piece_port": host.piece_port,
        "is_seed": host.is_seed,
        "idc": host.idc,
        "rack": host.rack,
        "location": host.location,
        "upload_slots": host.upload_slots,
        "peers": len(host.peers),
        "children": host.children_count,
        "upload_bps": host.recent_upload_bytes(now) / UPLOAD_WINDOW_S,
        "uploads_ok": host.upload_ok_count,
        "uploads_failed": host.upload_failed_count,
        "last_announce_age_s": max(0.0, now - host.last_announce_s),
    }


def _peer_json(peer: Peer, now: float) -> dict[str, Any]:
    return {
        "peer_id": peer.peer_id,
        "host_id": peer.host.host_id,
        "state": peer.state.value,
        "is_seed": peer.host.is_seed,
        "back_to_source": peer.back_to_source,
        "pieces": peer.finished_piece_count,
        # Best parent first, as last handed out: the edges of the swarm graph.
        "parents": list(peer.parents),
        "idle_s": max(0.0, now - peer.last_piece_at_s),
    }


def _task_json(task: Task, now: float) -> dict[str, Any]:
    peers = sorted(
        task.peers.values(),
        key=lambda p: (0 if p.host.is_seed else _PEER_ORDER[p.state], p.peer_id),
    )
    return {
        "task_id": task.task_id,
        "size_bytes": task.size_bytes,
        "piece_bytes": task.piece_bytes,
        "piece_count": task.piece_count,
        "age_s": max(0.0, now - task.created_at_s),
        "peer_count": len(task.peers),
        "complete_peer_count": len(task.complete_peers),
        "seed_peer_count": task.seed_peer_count,
        "peers": [_peer_json(p, now) for p in peers[:MAX_PEERS_PER_TASK]],
        "peers_truncated": len(peers) > MAX_PEERS_PER_TASK,
    }


def _busy_first(task: Task) -> tuple[int, int, str]:
    downloading = sum(1 for p in task.peers.values() if p.state is not PeerState.SUCCEEDED)
    return (-downloading, -len(task.peers), task.task_id)


def snapshot(state: SchedulerState, now: float, rng: random.Random) -> dict[str, Any]:
    """The state as the page shows it; a writer operation (reads only)."""
    hosts = sorted(state.hosts.values(), key=lambda h: (not h.is_seed, h.host_id))
    tasks = sorted(state.tasks.values(), key=_busy_first)[:MAX_TASKS]
    host_list = [_host_json(h, now) for h in hosts[:MAX_HOSTS]]
    return {
        "counts": {
            "hosts": len(state.hosts),
            "seed_hosts": sum(1 for h in state.hosts.values() if h.is_seed),
            "peers": len(state.peers),
            "tasks": len(state.tasks),
        },
        "upload_bps": sum(h.recent_upload_bytes(now) for h in state.hosts.values())
        / UPLOAD_WINDOW_S,
        "hosts": host_list,
        "hosts_truncated": len(hosts) > MAX_HOSTS,
        "tasks": [_task_json(t, now) for t in tasks],
        "tasks_truncated": len(state.tasks) > MAX_TASKS,
    }


def counter_totals(counter: Counter, label: str) -> dict[str, float]:
    """A labelled counter's current values, by label value."""
    totals: dict[str, float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.labels[label]] = sample.value
    return totals


def _asset(name: str) -> bytes:
    return importlib.resources.files("scheduler.service").joinpath("static", name).read_bytes()


class StatusPage:
    def __init__(self, writer: StateWriter, metrics: SchedulerMetrics, host_ttl_s: float) -> None:
        self._writer = writer
        self._metrics = metrics
        self._host_ttl_s = host_ttl_s
        self._started = time.monotonic()
        # Read once: the page is a few kilobytes and never changes while the process runs.
        self._assets = {path: (_asset(name), kind) for path, (name, kind) in _ASSETS.items()}

    def add_routes(self, app: web.Application) -> None:
        for path in self._assets:
            app.router.add_get(path, self.asset)
        app.router.add_get("/api/v1/status", self.status)

    async def asset(self, request: web.Request) -> web.Response:
        body, kind = self._assets[request.path]
        return web.Response(
            body=body,
            content_type=kind,
            charset="utf-8",
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    async def status(self, request: web.Request) -> web.Response:
        body = await self._writer.submit(snapshot)
        piece_bytes = counter_totals(self._metrics.piece_bytes, "source")
        body["piece_bytes"] = {source: int(piece_bytes.get(source, 0)) for source in PIECE_SOURCES}
        body["host_ttl_s"] = self._host_ttl_s
        body["uptime_s"] = time.monotonic() - self._started
        return web.json_response(body, headers={"Cache-Control": "no-store"})
