"""Origin shares: several peers fetch one blob from the origin, each piece once (sans-IO).

A seed peer alone between the origin and the swarm passes on at most its own uplink's
worth, however fast the origin is: on the cluster benchmark's racks (origin 80 Mbit/s,
seed uplink 40) every byte had to squeeze through the seed's 40 into the racks. So
with ``SchedulerSettings.origin_sharers_per_rack``, the first normal peers of each rack
in a task go to the origin too, alongside the seed and the quota's peer. Each of these
*takers* asks for a few pieces at a time (``SchedulerState.take_origin_pieces``) and is
handed the lowest that no live peer holds and no live taker has taken within
``origin_share_lease_s``; when none are left it asks for parents like any peer, a seed
included. The origin still sends each piece about once, but its egress now reaches the
racks directly, and their sharers pass their pieces on over their own uplinks.

A taker that leaves frees its pieces at once, one that stalls after the lease. When no
taker has taken pieces within the lease and pieces nobody holds are free, a peer the
swarm cannot serve is sent to take them (``quota.without_parent``) instead of waiting
for a copy nobody fetches.

Measured with p2psim (rule evaluator), one sharer per rack against none, means of
makespan / lower bound and of median completion / bound: the cluster benchmark's racks
(16 seeds) 1.95x -> 1.84x (medians 1.93x -> 1.81x), median node 1.76x -> 1.65x; the
1,000-node default and oversubscribed scenarios (seeds 0-15) 6.02x -> 4.97x and 5.92x ->
5.02x, median node 5.20x -> 4.24x and 5.18x -> 4.22x; heterogeneous, stragglers and
churn (seeds 0-3) 1.37x -> 1.33x, 1.33x -> 1.27x and 5.59x -> 5.18x; staggered
unchanged (1.00x). Origin bytes stayed 1.00x the image. Takes of one piece at a time
did no better than four on the racks (8 seeds: 1.82x against 1.87x, within the spread
between seeds).

Off by default (``origin_sharers_per_rack: 0``): real peers did not follow p2psim. On
the cluster benchmark (bench/results/cluster-racks-origin-shares-paired.json), six paired
rounds on the racks took 2.15x the bound on average with shares against 2.01x without
(p2psim had predicted 22.1 s against 24.3 s for the first pair; the peers took 27.0 s
against 23.7 s), and three on the flat network 1.87x against 1.85x. With shares the
seed's uplink idled more (50% busy against 70%) and the last peers finished later; a
variant in which the seed left the rest of the blob until the swarm was done did no
better (2.24x against 2.09x, four pairs). Why p2psim misses this is open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.core.model import Peer


class OriginShares:
    """The origin takes of one task: piece -> (taker's peer id, lease end), and the
    takers still taking -> the lease end of their latest take."""

    __slots__ = ("_takes", "_takers")

    def __init__(self) -> None:
        self._takes: dict[int, tuple[str, float]] = {}
        self._takers: dict[str, float] = {}

    def start(self, taker: str, now: float, lease_s: float) -> None:
        """``taker`` was sent to the origin to take pieces."""
        self._takers[taker] = now + lease_s

    def take(
        self,
        taker: str,
        want: int,
        availability: Sequence[int],
        now: float,
        lease_s: float,
        is_live: Callable[[str], bool],
    ) -> list[int]:
        """Up to ``want`` pieces for ``taker``, lowest first: those no live peer holds
        (``availability[i] == 0``) and nobody has a live, unexpired take on. A piece is
        handed to a taker once: its own earlier takes are not handed back, as it may not
        have reported them yet. An empty answer ends ``taker``'s taking."""
        granted: list[int] = []
        if want > 0:
            for index, holders in enumerate(availability):
                if holders or not self._free(index, now, is_live):
                    continue
                self._takes[index] = (taker, now + lease_s)
                granted.append(index)
                if len(granted) >= want:
                    break
        if granted:
            self._takers[taker] = now + lease_s
        else:
            self._takers.pop(taker, None)
        return granted

    def is_taking(self, taker: str) -> bool:
        return taker in self._takers

    def forget(self, taker: str) -> None:
        """``taker`` left: it takes no more, and its pieces are free (``is_live``)."""
        self._takers.pop(taker, None)

    def orphaned(
        self, availability: Sequence[int], now: float, is_live: Callable[[str], bool]
    ) -> bool:
        """Whether pieces were taken before but some piece nobody holds is now free
        while no taker is left to take it: a taker left or stalled. A taker that has not
        taken pieces within the lease counts as stalled."""
        if not self._takes or 0 not in availability:
            return False
        if any(until > now for until in self._takers.values()):
            return False
        return any(
            not holders and self._free(index, now, is_live)
            for index, holders in enumerate(availability)
        )

    def _free(self, index: int, now: float, is_live: Callable[[str], bool]) -> bool:
        """Nobody has a live, unexpired take on piece ``index``."""
        held = self._takes.get(index)
        return held is None or held[1] <= now or not is_live(held[0])


def take_share(peer: Peer, want: int, now: float, lease_s: float) -> list[int]:
    """``SchedulerState.take_origin_pieces``: up to ``want`` pieces for ``peer`` to fetch
    from the origin. The empty answer that ends its share also ends its origin fetch:
    its next decision gives it parents. Empty for a peer not sent to take a share."""
    task = peer.task
    shares = task.origin_shares
    if not shares.is_taking(peer.peer_id):
        return []
    granted = shares.take(
        peer.peer_id, want, task.availability, now, lease_s, task.peers.__contains__
    )
    if not granted:
        peer.back_to_source = False
        peer.took_origin_share = True
    return granted
