"""Pieces a rack already holds stay in the rack: which rack-mate to get each from (sans-IO).

Claims (``scheduler.core.claims``) stop two peers of a rack from bringing the same piece
in at the same time, but not one after the other: a peer asks its parents in other racks
for any piece it lacks, and with four parents, often none in its rack holds the pieces
the rack already has. p2psim, the cluster benchmark's two racks of 12 behind 12:1
uplinks, with claims: the racks' downlinks carried 3.9 image copies where 2 would do;
1.6 of them were pieces that had already arrived in the rack when they were asked for.

So when a peer claims pieces that a rack-mate holds, the scheduler does not grant them:
it links a rack-mate that holds them as a parent of the peer, which fetches them from
there. Only rack-mates with a free upload slot are linked: sending a rack's peers to the
first rack-mates that got a piece makes hot spots of them where the uplink is no
bottleneck.

p2psim, on against off (``rack_holders_per_claim`` 4 against 0), 16 seeds each: the
cluster benchmark's racks 2.03x -> 1.93x the lower bound (medians; 3.9 -> 3.25 copies
through the racks' downlinks); the shipped 1,000-node default 6.04x -> 6.02x and
oversubscribed 6.16x -> 5.92x (means; median node 5.35x -> 5.20x and 5.51x -> 5.18x).
Tried and left: linking busy rack-mates too (racks 1.90x, but 1,000 nodes 7.8x and
7.3x); only while the rack's uplink counts as congested (``scheduler.core.rack_flow``;
racks 1.95x-1.99x: the verdict comes 5-8 s into a 24 s pull, or never for one rack).
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.core.model import Peer


def rack_holders(
    child: Peer, pieces: Iterable[int], most_new: int
) -> tuple[dict[int, Peer], list[Peer]]:
    """Of ``pieces``, those a rack-mate of ``child`` can serve, with the rack-mate; and
    the rack-mates among those that are not parents of ``child`` yet (to link).

    A current parent in the rack that holds a piece serves it: the child already follows
    its piece list. Then up to ``most_new`` rack-mates with a free upload slot,
    each the one with the fewest children among those holding some of the pieces still
    uncovered (ties: the one holding more of them), so the load spreads.
    Pieces left uncovered are not in the answer: the child may import them. Rack-mates
    are normal peers of the task with the child's rack label, never one it blocked.

    A rack-mate that downloads from the child may be linked too, closing a cycle that
    decisions never make (``FilterReason.CYCLE``): two rack-mates then trade pieces
    both ways, as BitTorrent peers do. Nothing waits on anything in such a cycle (each
    request is for a piece the parent holds), and the child's next decision drops that
    parent again. Leaving those rack-mates out cost p2psim's racks 4% (16 seeds: 2.01x
    the lower bound against 1.93x).
    """
    mates = child.task.holders_by_rack.get(child.host.rack_key)
    if mates is None:
        return {}, []
    wanted = 0
    for index in pieces:
        wanted |= 1 << index
    blocked = child.blocked_parent_ids
    served: dict[int, Peer] = {}
    free: list[Peer] = []
    for peer in mates:
        if peer is child or peer.host.is_seed or peer.peer_id in blocked:
            continue
        if peer.peer_id in child.parents:
            _cover(served, peer, wanted & peer.pieces_mask)
            wanted &= ~peer.pieces_mask
        elif peer.has_free_upload_slot:
            free.append(peer)
    new: list[Peer] = []
    while wanted and free and len(new) < most_new:
        best = max(
            free,
            key=lambda p: (
                bool(p.pieces_mask & wanted),
                -len(p.children),
                (p.pieces_mask & wanted).bit_count(),
            ),
        )
        if not best.pieces_mask & wanted:
            break
        new.append(best)
        free.remove(best)
        _cover(served, best, wanted & best.pieces_mask)
        wanted &= ~best.pieces_mask
    return served, new


def _cover(served: dict[int, Peer], peer: Peer, mask: int) -> None:
    """Record ``peer`` as the one serving each piece in ``mask``."""
    while mask:
        lowest = mask & -mask
        served[lowest.bit_length() - 1] = peer
        mask ^= lowest
