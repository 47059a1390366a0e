"""Rack import claims: which peer of a rack brings a piece in from another rack (sans-IO).

Behind an oversubscribed uplink, a piece that enters a rack twice takes uplink time a
piece the rack lacks could have had. Stripes (``scheduler.core.stripes``) share the
work out ahead of time, but a peer that has run out of its stripe takes any piece, and
often one a rack-mate is fetching across the uplink at that very moment. So before a
peer asks a parent in another rack for pieces, it claims them here: a piece is granted
to one peer of a rack at a time, until that peer releases it (the piece arrived or the
request failed) or its lease runs out (the claimant died or stalled). A peer denied a
piece does not ask other racks for it for a moment, and gets it from the rack-mate.

Measured with p2psim on the cluster benchmark's two racks of 12 behind 12:1 uplinks,
claims on against off (16 seeds, medians): 2.23x -> 2.03x the lower bound, median node
2.02x -> 1.81x; the seed's uplink sends 1.43 image copies instead of 1.58. On the
shipped 1,000-node scenarios (seeds 0-3, means of makespan / bound and of median
completion / bound): default 6.14 -> 6.14x and 5.35 -> 5.42x, oversubscribed 6.24 ->
6.09x and 5.62 -> 5.49x. Holding a denied piece back 0.25 s instead of 0.05 s
(``peer.conductor.CLAIM_HOLD_S``) cost those 4% and the racks 2%.

A released claim is kept a while longer: ``hold_factor`` times as long as the import
took, at most ``HOLD_MAX_S``. The piece has just arrived at one rack-mate, whose upload
slots are often all busy, so the next peer to claim it would otherwise bring it across
the uplink again rather than wait for a rack-mate to serve it (p2psim, the cluster
benchmark's racks: 1.1 image copies a run crossed the uplinks into a rack that already
held them). Scaling with the import's own duration keeps the wait about one piece
transfer on any network: a fixed 1 s hold helped the racks as much but slowed the
1,000-node scenarios, where a piece crosses in milliseconds, by 10-13%. p2psim, factor 2
against 0 (means of makespan / bound): racks 1.95x -> 1.86x (16 seeds) and 1.95x ->
1.89x (24 other seeds); 1,000-node default 6.03x -> 6.02x and oversubscribed 5.99x ->
6.08x (8 seeds); heterogeneous, stragglers and staggered the same, churn 5.57x ->
5.67x (6 seeds). A release after a failed request is held the same way: the claimant
may claim the piece again at once, its rack-mates wait at most ``HOLD_MAX_S``.

Real peers disagreed, so the factor defaults to 0 (off): on the cluster benchmark's
racks, four paired rounds at factor 2 took 2.05x the lower bound against 1.96x without
(slower in three). The hold did what it is for, the racks' downlinks carried 2.5 image
copies instead of 3.0, but the racks' uplinks then sat idler and the seed sent more
(bench/results/cluster-racks-claim-hold-paired.json). Those rounds keep the CPUs busy;
at half the rates, where they do not, three pairs took 1.94x against 1.95x, with 2.9
copies through the downlinks instead of 3.4 (bench/results/cluster-racks-half-rates.json).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from scheduler.core.decisions import ParentChoice

# The longest a released claim is kept: a few piece transfers across a busy uplink.
HOLD_MAX_S = 2.0


class ClaimsAnswer(NamedTuple):
    """What ``SchedulerState.claim_imports`` answers a peer."""

    # The pieces it may fetch from other racks' normal peers now.
    granted: list[int]
    # Pieces to leave to rack-mates for a moment: they are fetching them from other
    # racks, or hold them (``scheduler.core.rack_holders``).
    claimed: list[int]
    # Rack-mates now linked as its parents, holding pieces it asked for.
    holders: tuple[ParentChoice, ...] = ()
    # How many of the pieces it asked for a rack-mate holds and serves instead.
    in_rack: int = 0


class RackClaims:
    """The import claims of one task: per rack, piece -> (claimant's peer id, lease end)."""

    __slots__ = ("_racks",)

    def __init__(self) -> None:
        self._racks: dict[tuple[str, str], dict[int, tuple[str, float]]] = {}

    def claim(
        self,
        rack: tuple[str, str],
        claimant: str,
        pieces: Iterable[int],
        released: Iterable[int],
        now: float,
        lease_s: float,
        is_live: Callable[[str], bool],
        hold_factor: float = 0.0,
    ) -> tuple[list[int], list[int]]:
        """Release ``released``, then grant ``claimant`` those of ``pieces`` that no other
        live peer of ``rack`` holds an unexpired claim on. Returns the granted pieces and,
        if it claimed any, every piece rack-mates hold claims on: the claimant leaves
        those to them too. A released claim stays ``hold_factor`` times as long as it had
        been held, at most ``HOLD_MAX_S`` (0: it goes at once). A lapsed claim stays in
        the book until it is claimed again."""
        book = self._racks.setdefault(rack, {})
        for index in released:
            held = book.get(index)
            if held is not None and held[0] == claimant:
                # The lease was granted, or last renewed, lease_s before it ends.
                took_s = max(0.0, now - (held[1] - lease_s))
                hold_s = min(hold_factor * took_s, HOLD_MAX_S)
                if hold_s > 0:
                    book[index] = (claimant, now + hold_s)
                else:
                    del book[index]
        granted: list[int] = []
        others: list[int] = []
        asked = dict.fromkeys(pieces)
        for index in asked:
            held = book.get(index)
            if held is None or held[0] == claimant or held[1] <= now or not is_live(held[0]):
                book[index] = (claimant, now + lease_s)
                granted.append(index)
        if asked:
            others = sorted(
                index
                for index, (peer_id, until) in book.items()
                if peer_id != claimant and until > now and is_live(peer_id)
            )
        if not book:
            del self._racks[rack]
        return granted, others
