"""``p2pctl status``: the cluster as the scheduler sees it, from ``GET /api/v1/status``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ctl.api import ApiClient


def format_bytes(count: float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def short_digest(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]


async def fetch_status(scheduler: ApiClient) -> dict[str, Any]:
    status: dict[str, Any] = await scheduler.get_json("/api/v1/status")
    return status


def render(status: dict[str, Any], scheduler_url: str) -> str:
    counts = status["counts"]
    piece_bytes = status["piece_bytes"]
    total = sum(piece_bytes.values())
    swarm = piece_bytes["peer"] + piece_bytes["seed"]
    share = f"{100 * swarm / total:.0f}%" if total else "-"
    lines = [
        f"scheduler {scheduler_url}: up {format_age(status['uptime_s'])}, "
        f"{counts['hosts']} hosts ({counts['seed_hosts']} seed), {counts['peers']} peers, "
        f"{counts['tasks']} tasks",
        f"piece bytes reported: {format_bytes(total)} (origin "
        f"{format_bytes(piece_bytes['origin'])}, seed {format_bytes(piece_bytes['seed'])}, "
        f"peer {format_bytes(piece_bytes['peer'])}); from peers and seeds: {share}",
        f"swarm upload rate (60 s average): {format_bytes(status['upload_bps'])}/s",
        "",
    ]
    hosts = status["hosts"]
    if hosts:
        rows = [
            [
                h["host_id"],
                f"{h['address']}:{h['piece_port']}",
                "seed" if h["is_seed"] else "peer",
                "/".join(part for part in (h["idc"], h["rack"]) if part) or "-",
                str(h["peers"]),
                f"{h['children']}/{h['upload_slots']}",
                f"{format_bytes(h['upload_bps'])}/s",
                f"{format_age(h['last_announce_age_s'])} ago",
            ]
            for h in hosts
        ]
        headers = ["HOST", "ADDRESS", "ROLE", "IDC/RACK", "PEERS", "CHILDREN", "UPLOAD", "SEEN"]
        lines += table(headers, rows)
        if status["hosts_truncated"]:
            lines.append(f"... {len(hosts)} of {counts['hosts']} hosts shown")
    else:
        lines.append("no hosts: no peer has announced itself")
    lines.append("")
    tasks = status["tasks"]
    if tasks:
        rows = []
        for t in tasks:
            downloading = sum(1 for p in t["peers"] if p["state"] != "succeeded")
            rows.append(
                [
                    short_digest(t["task_id"]),
                    format_bytes(t["size_bytes"]),
                    str(t["peer_count"]),
                    str(t["complete_peer_count"]),
                    str(downloading),
                    str(t["seed_peer_count"]),
                    f"{format_age(t['age_s'])} ago",
                ]
            )
        headers = ["TASK", "SIZE", "PEERS", "COMPLETE", "DOWNLOADING", "SEEDS", "FIRST SEEN"]
        lines += table(headers, rows)
        if status["tasks_truncated"]:
            lines.append(f"... the {len(tasks)} busiest of {counts['tasks']} tasks shown")
    else:
        lines.append("no tasks: no peer is working on a blob")
    return "\n".join(lines)
