"""The swarm benchmark's arithmetic: the fluid lower bound, the figures and the table.

Rates are bytes per second here (the command line takes Mbit/s, 10^6 bits per second).
"""

from __future__ import annotations

import hashlib
import math
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import REPO_ROOT, round_
from peer.sizes import format_size

# A full-size TCP segment carries 1448 payload bytes (MSS 1460 less the timestamp option)
# in a 1514-byte Ethernet frame, which is what tc counts: no transfer can beat this share
# of a shaped link's rate.
TCP_PAYLOAD_SHARE = 1448 / 1514
TARGET_BOUND_RATIO = 2.0
TARGET_REGISTRY_MULTIPLE = 1.1
LINK_USES = ("registry_upload_used", "seed_upload_used", "peers_upload_used", "peers_download_used")
# The code whose behaviour is measured; its state goes into the report.
MEASURED_CODE = ("peer", "registry_proxy", "scheduler")


@dataclass(frozen=True)
class Capacities:
    """What the lower bound is computed from (bytes and bytes per second)."""

    image_bytes: int
    peers: int
    registry_up_Bps: float
    peer_up_Bps: Sequence[float]
    peer_down_Bps: Sequence[float]
    seed_up_Bps: float


def lower_bound(caps: Capacities, payload_share: float = 1.0) -> dict[str, Any]:
    """Kumar & Ross's minimum distribution time for N receivers, and its binding term.

    ``T >= max(F/u_s, F/d_min, N*F/(u_s + u_seed + sum(u_i)))``: every byte starts at
    the registry (``F/u_s``); the slowest receiver must take in all of it (``F/d_min``);
    and N copies must be uploaded by someone, at most at the sum of all upload rates.
    The seed is not one of the N receivers (nobody waits for it), but its upload counts
    as a helper's: any byte a normal peer receives came from the registry, the seed or
    another peer. The seed must first get the bytes from the registry, which only the
    registry term reflects, so this is a valid bound but not always an attainable one.
    ``payload_share`` scales every rate (pass :data:`TCP_PAYLOAD_SHARE` for TCP payload).
    """
    f, n = caps.image_bytes, caps.peers
    u_s = caps.registry_up_Bps * payload_share
    d_min = min(caps.peer_down_Bps) * payload_share
    total_up = (caps.registry_up_Bps + caps.seed_up_Bps + sum(caps.peer_up_Bps)) * payload_share
    terms = {
        "registry": f / u_s,
        "slowest_download": f / d_min,
        "swarm_upload": n * f / total_up,
    }
    binding = max(terms, key=lambda k: terms[k])
    return {
        "seconds": round_(terms[binding]),
        "binding_term": binding,
        "terms_s": {k: round_(v) for k, v in terms.items()},
    }


def direct_lower_bound(caps: Capacities, payload_share: float = 1.0) -> dict[str, Any]:
    """Without P2P the registry sends N copies: ``max(N*F/u_s, F/d_min)``."""
    f, n = caps.image_bytes, caps.peers
    terms = {
        "registry": n * f / (caps.registry_up_Bps * payload_share),
        "slowest_download": f / (min(caps.peer_down_Bps) * payload_share),
    }
    binding = max(terms, key=lambda k: terms[k])
    return {
        "seconds": round_(terms[binding]),
        "binding_term": binding,
        "terms_s": {k: round_(v) for k, v in terms.items()},
    }


def percentile(values: Sequence[float], share: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), or None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def completion_stats(seconds: Sequence[float]) -> dict[str, Any]:
    return {
        "p50_s": round_(percentile(seconds, 0.5)),
        "p95_s": round_(percentile(seconds, 0.95)),
        "max_s": round_(max(seconds)) if seconds else None,
        "min_s": round_(min(seconds)) if seconds else None,
    }


def median_of(rounds: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return round_(statistics.median(values)) if values else None


def code_state() -> dict[str, Any]:
    """Which peer, proxy and scheduler code ran: commit, files changed since, source hash."""
    sources = hashlib.sha256()
    for directory in MEASURED_CODE:
        for path in sorted((REPO_ROOT / directory).rglob("*.py")):
            sources.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
            sources.update(path.read_bytes())

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], capture_output=True, text=True, timeout=10, cwd=REPO_ROOT
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    status = git("status", "--porcelain", "--", *MEASURED_CODE)
    return {
        "git_commit": git("rev-parse", "HEAD").strip() or "unavailable",
        "uncommitted_changes": [line[3:] for line in status.splitlines() if line.strip()],
        "sources_sha256": sources.hexdigest(),
    }


# One round and the medians over rounds --------------------------------------------------


@dataclass(frozen=True)
class RoundCounters:
    """What the registry and the shapers counted during one mode's pulls."""

    registry_blob_bytes: int
    registry_blob_gets: int
    registry_bytes_by_digest: dict[str, int]
    registry_tx_bytes: int | None  # everything the registry's interface sent
    qdiscs: dict[str, dict[str, int]]


def summarise_round(
    mode: str,
    results: list[dict[str, Any]],
    image_bytes: int,
    counters: RoundCounters,
    cpu: dict[str, Any],
    metrics: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The figures of one mode's round, from the clients' results and the counters."""
    normal = [r for r in results if r["node"] != "seed"]
    times = [r["completion_s"] for r in normal if r.get("completion_s") is not None]
    all_ok = all(r["ok"] for r in results) and len(times) == len(normal)
    tx = counters.registry_tx_bytes
    entry: dict[str, Any] = {
        "all_ok": all_ok,
        "makespan_s": max(times) if times and all_ok else None,
        **completion_stats(times),
        "registry_blob_bytes": counters.registry_blob_bytes,
        "registry_blob_bytes_over_image": round_(counters.registry_blob_bytes / image_bytes, 3),
        "registry_blob_gets": counters.registry_blob_gets,
        "registry_tx_bytes": tx,
        "registry_tx_bytes_over_image": round_(tx / image_bytes, 3) if tx else None,
        # Blob bytes in the access log over what the interface could have carried as TCP
        # payload: near 1 (a little less for manifests and headers) when the two agree.
        "registry_log_over_tx_payload": round_(
            counters.registry_blob_bytes / (tx * TCP_PAYLOAD_SHARE), 3
        )
        if tx
        else None,
    }
    fallback_bytes = sum(r.get("bytes_by_source", {}).get("fallback", 0) for r in normal)
    entry["client_fallback_blobs"] = sum(r.get("fallback_blobs", 0) for r in normal)
    entry["client_fallback_nodes"] = sum(1 for r in normal if r.get("fallback_blobs"))
    entry["client_fallback_bytes_over_image"] = round_(fallback_bytes / image_bytes, 3)
    if mode == "p2p":
        entry.update(_sources(metrics))
        seed = next((r for r in results if r["node"] == "seed"), None)
        entry["seed_completion_s"] = seed.get("completion_s") if seed else None
    else:
        # The clients talk to the registry itself: nothing can come from a peer.
        entry["p2p_share"] = 0.0
        entry["peer_share"] = 0.0
    entry["cpu"] = cpu
    entry["qdiscs"] = counters.qdiscs
    entry["nodes"] = results
    entry["registry_bytes_by_digest"] = counters.registry_bytes_by_digest
    if metrics:
        entry["metrics"] = metrics
    return entry


def _sources(metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Where the normal peers' bytes came from, by their own counters."""
    sources = {"origin": 0.0, "peer": 0.0, "seed": 0.0}
    per_peer = {}
    for name, samples in metrics.items():
        if name in ("scheduler", "seed"):
            continue
        got = {
            source: samples.get(f'p2p_peer_download_bytes_total{{source="{source}"}}', 0.0)
            for source in sources
        }
        per_peer[name] = got
        for source, value in got.items():
            sources[source] += value
    received = sum(sources.values())
    return {
        "normal_peer_bytes_by_source": sources,
        # From the swarm (other peers and the seed), as the issue's e2e test counts it...
        "p2p_share": round_((sources["peer"] + sources["seed"]) / received, 4)
        if received
        else None,
        # ...and from other normal peers alone: how much the peers fed each other.
        "peer_share": round_(sources["peer"] / received, 4) if received else None,
        "per_peer_bytes_by_source": per_peer,
    }


def figures_for(
    rounds: list[dict[str, Any]], bound_s: float, direct_bound_s: float
) -> dict[str, Any]:
    """Medians over the rounds of one mode."""
    if not rounds:
        return {}
    makespan = median_of(rounds, "makespan_s")
    figures: dict[str, Any] = {
        "all_ok": all(r["all_ok"] for r in rounds),
        "makespan_s": makespan,
        "completion_p50_s": median_of(rounds, "p50_s"),
        "completion_p95_s": median_of(rounds, "p95_s"),
        "completion_max_s": median_of(rounds, "max_s"),
        "makespan_over_bound": round_(makespan / bound_s, 3) if makespan else None,
        "makespan_over_direct_bound": round_(makespan / direct_bound_s, 3) if makespan else None,
        "registry_blob_bytes": median_of(rounds, "registry_blob_bytes"),
        "registry_blob_bytes_over_image": median_of(rounds, "registry_blob_bytes_over_image"),
        "registry_tx_bytes_over_image": median_of(rounds, "registry_tx_bytes_over_image"),
        "p2p_share": median_of(rounds, "p2p_share"),
        "client_fallback_blobs": median_of(rounds, "client_fallback_blobs"),
        "client_fallback_nodes": median_of(rounds, "client_fallback_nodes"),
        "client_fallback_bytes_over_image": median_of(rounds, "client_fallback_bytes_over_image"),
        "peer_share": median_of(rounds, "peer_share"),
        "host_cpu_busy": round_(statistics.median(r["cpu"]["host_cpu_busy"] for r in rounds), 3),
    }
    for key in ("benchmark_processes_cpu_s", "host_busy_cpu_s", "host_cpu_busy_max_sample"):
        values = [r["cpu"][key] for r in rounds if r["cpu"].get(key) is not None]
        figures[key] = round_(statistics.median(values), 2) if values else None
    for use in LINK_USES:
        values = [r["links"][use] for r in rounds if r.get("links", {}).get(use) is not None]
        figures[use] = round_(statistics.median(values), 3) if values else None
    if any("seed_completion_s" in r for r in rounds):
        figures["seed_completion_s"] = median_of(rounds, "seed_completion_s")
    shares = [s for s in map(upload_drop_share, rounds) if s is not None]
    figures["upload_drop_share"] = round_(statistics.median(shares), 4) if shares else None
    return figures


def upload_drop_share(entry: dict[str, Any]) -> float | None:
    """The share of packets the peers' and the seed's upload shapers dropped in a round.

    A shaper drops when its queue is full; TCP then resends. A high share means the
    senders overrun the shapers' queues (BBR does with these shallow ones), so transfers
    stall on losses a real NIC's backpressure would not cause.
    """
    ups = [
        stats
        for label, stats in (entry.get("qdiscs") or {}).items()
        if label.endswith(" up") and not label.startswith("registry")
    ]
    if not ups or any("packets" not in stats for stats in ups):
        return None
    sent = sum(stats["packets"] for stats in ups)
    dropped = sum(stats["drops"] for stats in ups)
    return dropped / (sent + dropped) if sent + dropped else None


def target_checks(figures: dict[str, Any], shaped: bool) -> dict[str, Any]:
    """The issue's targets; without kernel shaping the bound ratio means nothing."""
    p2p = figures.get("p2p") or {}
    ratio = p2p.get("makespan_over_bound")
    registry = p2p.get("registry_blob_bytes_over_image")
    checks: dict[str, dict[str, Any]] = {
        "p2p_makespan_over_lower_bound": {
            "target": f"<= {TARGET_BOUND_RATIO}",
            "measured": ratio,
            "met": ratio is not None and ratio <= TARGET_BOUND_RATIO,
        },
        "p2p_registry_bytes_over_image": {
            "target": f"<= {TARGET_REGISTRY_MULTIPLE}",
            "measured": registry,
            "met": registry is not None and registry <= TARGET_REGISTRY_MULTIPLE,
        },
    }
    if not shaped:
        checks["p2p_makespan_over_lower_bound"]["met"] = False
        checks["p2p_makespan_over_lower_bound"]["target"] += " (not evaluated: no shaping)"
    return checks


# The table ---------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"


def render_summary(report: dict[str, Any]) -> str:
    params = report["parameters"]
    shaping = report["shaping"]
    bound = report["lower_bound"]
    figures = report["figures"]
    lines = []
    if shaping["kind"] != "netns":
        lines += [
            "!" * 78,
            "WARNING: " + shaping["note"].upper(),
            "!" * 78,
        ]
    lines += [
        f"Starling swarm benchmark: {params['peers']} peers + 1 seed pull one "
        f"{format_size(report['image']['total_bytes'])} image "
        f"({len(report['image']['layers'])} layers + config) at once; "
        f"{report['rounds_done']} round(s), medians shown.",
        f"Limits (Mbit/s = 10^6 bit/s): peer up {params['peer_up_mbps']:g}, "
        f"peer down {params['peer_down_mbps']:g}, seed up {params['seed_up_mbps']:g}, "
        f"seed down {params['seed_down_mbps']:g}, registry egress "
        f"{params['registry_egress_mbps']:g}; shaping: {shaping['kind']}.",
        f"Lower bound (Kumar & Ross, seed counted as an uploading helper, not a receiver): "
        f"{bound['seconds']:.1f} s, bound by {bound['binding_term']} "
        + "("
        + ", ".join(f"{k} {v:.1f} s" for k, v in bound["terms_s"].items())
        + ").",
        f"Without P2P the registry must send N copies: direct lower bound "
        f"{report['direct_lower_bound']['seconds']:.1f} s.",
        "",
        f"{'mode':<7} {'makespan s':>10} {'p50 s':>7} {'p95 s':>7} {'max s':>7} "
        f"{'x bound':>7} {'registry xF':>11} {'P2P share':>9} {'peer share':>10} "
        f"{'CPU busy':>8} {'ok':>3}",
    ]
    for mode in ("p2p", "direct"):
        fig = figures.get(mode)
        if not fig:
            continue
        lines.append(
            f"{mode:<7} {_fmt(fig['makespan_s'], '.1f'):>10} "
            f"{_fmt(fig['completion_p50_s'], '.1f'):>7} "
            f"{_fmt(fig['completion_p95_s'], '.1f'):>7} "
            f"{_fmt(fig['completion_max_s'], '.1f'):>7} "
            f"{_fmt(fig['makespan_over_bound'], '.2f'):>7} "
            f"{_fmt(fig['registry_blob_bytes_over_image'], '.2f'):>11} "
            f"{_percent(fig['p2p_share']):>9} {_percent(fig.get('peer_share')):>10} "
            f"{_percent(fig['host_cpu_busy']):>8} "
            f"{'yes' if fig['all_ok'] else 'NO':>3}"
        )
    p2p = figures.get("p2p")
    if p2p and p2p.get("client_fallback_blobs"):
        lines.append(
            f"In p2p mode the mirror answered errors and clients fell back to the registry "
            f"for {p2p['client_fallback_blobs']:g} blobs on {p2p['client_fallback_nodes']:g} "
            f"nodes ({p2p['client_fallback_bytes_over_image']:.2f}x the image, median over "
            "rounds), as containerd does with deploy/containerd/hosts.toml."
        )
    for mode in ("p2p", "direct"):
        fig = figures.get(mode) or {}
        if fig.get("peers_download_used") is not None:
            lines.append(
                f"{mode} link use until the last peer finished: registry up "
                f"{_percent(fig['registry_upload_used'])}, seed up "
                f"{_percent(fig['seed_upload_used'])}, peers up "
                f"{_percent(fig['peers_upload_used'])}, peers down "
                f"{_percent(fig['peers_download_used'])} of capacity."
            )
    for mode in ("p2p", "direct"):
        fig = figures.get(mode) or {}
        if fig.get("host_busy_cpu_s") is not None:
            lines.append(
                f"{mode} CPU: the machine was busy for {fig['host_busy_cpu_s']:.0f} CPU-s "
                f"(busiest second {_percent(fig['host_cpu_busy_max_sample'])}); the "
                f"benchmark's processes used {fig['benchmark_processes_cpu_s']:.0f} of them."
            )
    if p2p and p2p.get("seed_completion_s") is not None:
        lines.append(f"seed finished its own pull after {p2p['seed_completion_s']:.1f} s (median).")
    direct = figures.get("direct")
    if p2p and direct and p2p["makespan_s"] and direct["makespan_s"]:
        lines.append(
            f"Speed-up of P2P over direct pulls (direct makespan / P2P makespan): "
            f"{direct['makespan_s'] / p2p['makespan_s']:.2f}; direct ran at "
            f"{_fmt(direct.get('makespan_over_direct_bound'), '.2f')}x its own bound."
        )
    lines.append(
        "P2P share: normal peers' bytes from other peers or the seed; peer share: from other "
        "normal peers alone; registry xF: registry blob bytes / image size."
    )
    lines.append("")
    for name, check in report["targets"].items():
        verdict = "met" if check["met"] else "NOT met"
        lines.append(
            f"Target {name}: {verdict} (target {check['target']}, measured {check['measured']})"
        )
    for warning in report["warnings"]:
        lines.append(f"WARNING: {warning}")
    lines.append(f"The benchmark took {report['duration_s']:.0f} s.")
    return "\n".join(lines)
