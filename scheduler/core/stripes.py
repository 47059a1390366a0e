"""Which share of a rack's cross-rack pieces each of its peers fetches (``Stripe``).

Behind an oversubscribed uplink, every piece that enters a rack more than once takes
uplink time a piece the rack lacks could have had. Left alone, each peer of a rack picks
its pieces from whichever parents hold them, and rack-mates often fetch the same piece
from other racks at nearly the same time. So each normal peer of a rack gets a stripe:
numbered by registration order among its rack's peers in the task (or among its
gateways, with ``SchedulerSettings.rack_gateways``), it asks normal peers of other racks
only for the pieces whose index falls in its stripe, and gets the others from the
rack-mates that fetched them. Seed peers sit outside every rack and are never striped:
they serve every rack.

A stripe is a preference, not a wall: a peer whose stripe leaves it with nothing to
fetch and nothing in flight picks from every parent's whole list
(``peer.piece_picker.stripe_blocks``), so a stripe whose owner left, is slow or has not
started yet never stalls its rack. Without that fallback, p2psim's 1,000-node default
scenario took 261x the lower bound instead of 6.

Measured with p2psim. The cluster benchmark's two racks of 12 behind 12:1 uplinks (8
seeds, medians): 2.46 -> 2.30x the lower bound (means 2.50 -> 2.27x), image copies
crossing rack uplinks 4.7 -> 4.3; with two gateways per rack 2.24 -> 2.05x (one gateway
has nobody to share with: no change). The shipped 1,000-node scenarios (6 seeds,
means): default 6.52 -> 5.90x, oversubscribed 6.92 -> 6.13x, stragglers 1.36 -> 1.35x,
heterogeneous 1.33 -> 1.34x. Flat networks have no other-rack parents: no change.
"""

from __future__ import annotations

from scheduler.core.decisions import Stripe
from scheduler.core.model import Peer


def stripe_for(child: Peer, gateways: int) -> Stripe | None:
    """``child``'s stripe, or None: not in a rack, a seed, alone in its rack, or (with
    ``gateways``) not among its rack's gateways: one let out after waiting
    (``rack_gateway_patience``) takes whatever it needs."""
    host = child.host
    if host.is_seed or not host.rack:
        return None
    members = child.task.rack_peers.get(host.rack_key)
    if not members:
        return None
    count = min(len(members), gateways) if gateways else len(members)
    if count < 2:
        return None
    for rank, peer_id in enumerate(members):
        if rank >= count:
            return None
        if peer_id == child.peer_id:
            return Stripe(rank, count)
    return None
