"""The demo's printed summary of a swarm pull, and the same facts as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from deploy.local.local_swarm import NodeResult, SwarmRun
from peer.sizes import format_size

CLIENTS = {"containerd": "ctr images pull", "http": "HTTP GET via mirror"}


def p2p_bytes(run: SwarmRun) -> float:
    """Blob bytes the peers received from other peers (seed included)."""
    return sum(n.from_peer_bytes + n.from_seed_bytes for n in run.nodes)


def received_bytes(run: SwarmRun) -> float:
    return sum(n.from_peer_bytes + n.from_seed_bytes + n.from_origin_bytes for n in run.nodes)


def all_pulls_ok(run: SwarmRun) -> bool:
    return all(n.ok for n in run.nodes)


def registry_ratio(run: SwarmRun) -> float:
    return run.registry_blob_bytes / run.image_bytes if run.image_bytes else 0.0


def _size(value: float) -> str:
    return format_size(int(value))


def _row(node: NodeResult) -> str:
    verdict = f"{node.digests_ok}/{node.digests_total} ok" if node.ok else "FAILED"
    return (
        f"  {node.name:<6} {CLIENTS[node.client]:<20} {node.seconds:6.2f} s "
        f"{_size(node.from_origin_bytes):>11} {_size(node.from_seed_bytes):>11} "
        f"{_size(node.from_peer_bytes):>11} {_size(node.uploaded_bytes):>11}  {verdict}"
    )


def summary_lines(run: SwarmRun) -> list[str]:
    """The table and the verdict lines, every figure measured during this run."""
    pulled = len(run.nodes)
    header = (
        f"  {'peer':<6} {'client':<20} {'time':>8} {'registry':>11} {'seed':>11} "
        f"{'peers':>11} {'uploaded':>11}  digests"
    )
    lines = [
        f"{pulled} pulls of {run.image_reference} ({run.blob_count} blobs, "
        f"{_size(run.image_bytes)}) started at once; the last ended after "
        f"{run.wall_seconds:.2f} s",
        "per peer: its pull's time (ctr's includes unpacking the layers), the blob bytes "
        "it got from",
        "the registry, the seed and other peers, and sent to other peers (its /metrics):",
        header,
        *(_row(node) for node in run.nodes),
    ]
    failed = [n for n in run.nodes if not n.ok]
    for node in failed:
        lines.append(f"  {node.name} failed: {node.error} (log {node.log_path})")
    received = received_bytes(run)
    share = p2p_bytes(run) / received if received else 0.0
    lines += [
        f"registry: sent {_size(run.registry_blob_bytes)} of blobs for a "
        f"{_size(run.image_bytes)} image, {registry_ratio(run):.2f}x the image "
        f"({pulled} direct pulls: {pulled:.2f}x)",
        f"peer-to-peer: {_size(p2p_bytes(run))} of the {_size(received)} the peers "
        f"received ({share:.0%}) came from other peers",
        f"scheduler: {run.scheduler.parent_decisions:.0f} parent decisions, "
        f"{run.scheduler.back_to_source_decisions:.0f} back-to-source, "
        f"{run.scheduler.retry_later_decisions:.0f} retry-later",
        (
            f"every pull succeeded; all {sum(n.digests_ok for n in run.nodes)} blobs "
            "received match their sha256 digests"
            if not failed
            else f"{len(failed)} of {pulled} pulls FAILED"
        ),
    ]
    return lines


def summary_json(run: SwarmRun) -> dict[str, Any]:
    return {
        **asdict(run),
        "all_pulls_ok": all_pulls_ok(run),
        "registry_ratio": registry_ratio(run),
        "p2p_bytes": p2p_bytes(run),
        "received_bytes": received_bytes(run),
    }
