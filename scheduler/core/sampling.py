"""Which peers of a task are looked at as parents for one child.

Only peers holding at least one piece are sampled: a peer with nothing can never pass
the filters, and early in a flash crowd nearly every peer has nothing. The sample fills
from the child's own rack first, then its idc, then the whole task, so nearby parents are
seen first without scanning anybody. An unset rack or idc label skips that tier.

When too few of those pass the filters, a second small sample comes from the peers that
hold every piece (seeds, finished peers). In a crowd that fetches pieces in the same
order, most holders have just what the child has; a random sample of them can miss the
few peers that are ahead, while any complete peer has something for every child.
"""

from __future__ import annotations

import random

from scheduler.core.model import Peer
from scheduler.core.random_set import RandomSet


def sample_candidates(child: Peer, size: int, rng: random.Random) -> list[Peer]:
    task, host = child.task, child.host
    tiers: list[RandomSet[Peer] | None] = [
        task.holders_by_rack.get(host.rack_key) if host.rack else None,
        task.holders_by_idc.get(host.idc) if host.idc else None,
        task.holders,
    ]
    picked: list[Peer] = []
    picked_ids: set[str] = set()
    for tier in tiers:
        missing = size - len(picked)
        if missing <= 0:
            break
        if tier is None:
            continue
        # Each tier contains the ones before it (a rack lies in one idc), so drawing
        # ``missing + len(picked)`` yields at least ``missing`` new peers when it can.
        for peer in tier.sample(rng, missing + len(picked)):
            if peer.peer_id not in picked_ids and len(picked) < size:
                picked.append(peer)
                picked_ids.add(peer.peer_id)
    return picked


def sample_complete(
    child: Peer, count: int, exclude_ids: set[str], rng: random.Random
) -> list[Peer]:
    """Up to ``count`` peers holding every piece, none of them in ``exclude_ids``."""
    if count <= 0:
        return []
    drawn = child.task.complete_peers.sample(rng, count + len(exclude_ids))
    return [peer for peer in drawn if peer.peer_id not in exclude_ids][:count]
