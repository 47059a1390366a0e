"""Which pieces a seed peer offers right now (sans-IO; the simulator runs it too).

A seed's upload is the swarm's only way in for pieces nobody else holds yet, so every
piece it sends twice is a piece some other peer could have sent instead. When many
children all see only the seed, they ask it for the same few pieces at once, and the
seed ends up sending the image several times over (measured with p2psim on the swarm
benchmark's network: 4 to 5 copies, and a makespan bound by the seed's upload).

So a seed offers a piece only while nobody is receiving it from the seed, and not again
until ``resend_after_s`` after its last upload of it finished: by then the child that
got it has reported it and others can fetch it there. Each further upload of the same
piece doubles that delay, up to ``max_resend_after_s``: a piece asked for again and
again is one the swarm already spreads. When the scheduler says normal peers hold a
piece (``set_spread``), the seed waits the whole ``max_resend_after_s`` (p2psim on the
swarm benchmark's network: 1.50 -> 1.14 image copies from the seed, makespan 25.7 ->
24.6 s over 6 seeds). A piece is never withheld for longer than that, so a child that
can only get it from the seed (alone in the swarm, or every other holder blocked) still
gets it, a little later. This is BitTorrent's "super-seeding" idea, driven by time and
by what the scheduler knows instead of by watching peers' announcements.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

# Long enough for the receiving child to report the piece (reports are batched every
# 0.2 s) and for other children to see it in a refreshed piece list (every 0.25 s);
# short enough that a child that can only get the piece here waits little.
RESEND_AFTER_S = 1.0
MAX_RESEND_AFTER_S = 8.0
# How often a seed asks the scheduler which pieces the swarm holds, per blob it serves.
SPREAD_REFRESH_S = 0.5
# Blobs whose upload bookkeeping a seed keeps; the least recently asked go first. A
# forgotten blob only loses its ration: every piece is offered again.
MAX_TRACKED_BLOBS = 1024


class SeedOffer:
    """Upload bookkeeping of one blob on a seed peer."""

    __slots__ = (
        "resend_after_s",
        "max_resend_after_s",
        "_sending",
        "_sent",
        "_spread",
        "_spread_asked_at",
    )

    def __init__(
        self,
        resend_after_s: float = RESEND_AFTER_S,
        max_resend_after_s: float = MAX_RESEND_AFTER_S,
    ) -> None:
        self.resend_after_s = resend_after_s
        self.max_resend_after_s = max_resend_after_s
        self._sending: dict[int, int] = {}  # piece -> uploads of it in progress
        # piece -> (when its last upload finished, complete uploads of it so far)
        self._sent: dict[int, tuple[float, int]] = {}
        # Per piece, normal peers holding it, as the scheduler last said; empty: unknown.
        self._spread: list[int] = []
        self._spread_asked_at: float | None = None

    def spread_due(self, now: float) -> bool:
        """Whether to ask the scheduler for the spread now (every ``SPREAD_REFRESH_S``);
        True also records that it is being asked."""
        if self._spread_asked_at is not None and now - self._spread_asked_at < SPREAD_REFRESH_S:
            return False
        self._spread_asked_at = now
        return True

    def set_spread(self, spread: list[int]) -> None:
        """What the scheduler says the swarm holds (``SchedulerState.task_spread``)."""
        self._spread = spread

    def offers(self, index: int, now: float) -> bool:
        if self._sending.get(index):
            return False
        sent = self._sent.get(index)
        if sent is None:
            return True
        sent_at, times = sent
        if index < len(self._spread) and self._spread[index] > 0:
            # Other peers hold it: they serve it. Only the cap applies, so a child that
            # cannot reach any of them still gets it here in the end.
            delay_s = self.max_resend_after_s
        else:
            delay_s = min(self.max_resend_after_s, self.resend_after_s * 2.0 ** (times - 1))
        return now - sent_at >= delay_s

    def offered(self, present: Iterable[int], now: float) -> list[int]:
        """The pieces of ``present`` to advertise now, in the given order."""
        return [index for index in present if self.offers(index, now)]

    def claim(self, index: int, now: float) -> bool:
        """Start an upload of ``index`` if it is offered; False means "ask elsewhere"."""
        if not self.offers(index, now):
            return False
        self._sending[index] = self._sending.get(index, 0) + 1
        return True

    def release(self, index: int, now: float, sent: bool) -> None:
        """An upload claimed with :meth:`claim` ended; ``sent``: every byte went out."""
        left = self._sending.get(index, 0) - 1
        if left > 0:
            self._sending[index] = left
        else:
            self._sending.pop(index, None)
        if sent:
            times = self._sent.get(index, (0.0, 0))[1]
            self._sent[index] = (now, times + 1)


class SeedOffers:
    """The :class:`SeedOffer` of each blob a seed serves, least recently used dropped."""

    def __init__(self, max_blobs: int = MAX_TRACKED_BLOBS) -> None:
        self._max_blobs = max_blobs
        self._offers: collections.OrderedDict[str, SeedOffer] = collections.OrderedDict()

    def get(self, digest: str) -> SeedOffer:
        offer = self._offers.get(digest)
        if offer is None:
            offer = self._offers[digest] = SeedOffer()
            if len(self._offers) > self._max_blobs:
                self._offers.popitem(last=False)
        else:
            self._offers.move_to_end(digest)
        return offer
