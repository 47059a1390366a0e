"""``p2pctl cache ls`` and ``p2pctl cache rm DIGEST...``: one peer's blob cache.

They use the peer's admin API (``peer.admin``), by default on the node's own registry
mirror, ``http://127.0.0.1:65001``; any peer's piece server works too, with the token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ctl.api import ApiClient, CtlError
from ctl.status import format_age, format_bytes, table

DEFAULT_PEER = "http://127.0.0.1:65001"


async def list_blobs(peer: ApiClient) -> dict[str, Any]:
    listing: dict[str, Any] = await peer.get_json("/api/v1/admin/blobs")
    return listing


def render_listing(listing: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for blob in listing["blobs"]:
        if blob["state"] == "complete":
            used = blob["last_used"]
            state = "complete" + (", in use" if blob["in_use"] else "")
            detail = f"{format_age(max(0.0, now - used))} ago" if used is not None else "-"
        else:
            state = blob["state"]
            detail = (
                f"{100 * blob['bytes'] / max(1, blob['size_bytes']):.0f}%"
                if blob["state"] == "downloading"
                else str(blob["error"] or "")
            )
        rows.append([blob["digest"], format_bytes(blob["size_bytes"]), state, detail])
    lines = table(["DIGEST", "SIZE", "STATE", "LAST USED / PROGRESS"], rows) if rows else []
    complete = sum(1 for b in listing["blobs"] if b["state"] == "complete")
    lines.append(
        f"{complete} cached blobs, {format_bytes(listing['cache_bytes'])} of "
        f"{format_bytes(listing['cache_quota_bytes'])} quota"
    )
    return "\n".join(lines)


async def remove_blobs(
    peer: ApiClient, digests: list[str], say: Callable[[str], None], warn: Callable[[str], None]
) -> bool:
    """Remove each blob; True when every one was removed."""
    ok = True
    for digest in digests:
        answer = await peer.request("DELETE", f"/api/v1/admin/blobs/{digest}")
        if answer.status == 200:
            say(f"removed {digest} ({format_bytes(answer.body['removed_bytes'])})")
        elif answer.status == 404:
            warn(f"{digest} is not in the cache of {peer.where}")
            ok = False
        elif answer.status in (400, 409):
            warn(f"{digest}: {answer.error}")
            ok = False
        else:
            raise CtlError(f"{peer.where} answered {answer.status}: {answer.error}")
    return ok
