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

A rack has at most ``SchedulerSettings.rack_stripes`` (8) stripes; past that, peers
share them round-robin. One stripe per peer made a piece hop from rack-mate to rack-mate
through big racks: in p2psim's 10,000-node scenario (racks of 40, uplinks no
bottleneck) the median node finished 14% later than without stripes (2 seeds), 4% later
with at most 8.

A stripe is a preference, not a wall: a peer whose stripe leaves it with nothing to
fetch and nothing in flight picks from every parent's whole list
(``peer.piece_picker.stripe_blocks``), so a stripe whose owner left, is slow or has not
started yet never stalls its rack. Without that fallback, p2psim's 1,000-node default
scenario took 261x the lower bound instead of 6.

Measured with p2psim, at most 8 stripes against none. The cluster benchmark's two racks
of 12 behind 12:1 uplinks (8 seeds, medians): 2.46 -> 2.29x the lower bound. The shipped
1,000-node scenarios (seeds 0-3, means of makespan / bound and of median completion /
bound): default 6.27 -> 6.14x and 5.56 -> 5.35x, oversubscribed 6.76 -> 6.24x and 5.97 ->
5.62x, stragglers 1.34 -> 1.33x and 0.61 -> 0.57x, heterogeneous 1.32 -> 1.34x and
0.59 -> 0.55x. The 10,000-node scenario (seeds 0 and 1): 6.60 -> 6.68x and
4.90 -> 5.08x (one stripe per peer: 6.96x and 5.56x). Flat networks have no parents in
other racks: no change.
"""

from __future__ import annotations

from scheduler.core.decisions import Stripe
from scheduler.core.model import Peer


def stripe_for(child: Peer, gateways: int, stripes: int) -> Stripe | None:
    """``child``'s stripe among at most ``stripes``, or None: not in a rack, a seed,
    alone in its rack, or (with ``gateways``) not among its rack's gateways: one let out
    after waiting (``rack_gateway_patience``) takes whatever it needs."""
    host = child.host
    if host.is_seed or not host.rack:
        return None
    members = child.task.rack_peers.get(host.rack_key)
    if not members:
        return None
    sharing = min(len(members), gateways) if gateways else len(members)
    count = min(sharing, stripes)
    if count < 2:
        return None
    rank = child.task.rack_rank(child, sharing)
    return None if rank is None else Stripe(rank % count, count)
