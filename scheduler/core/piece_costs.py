"""Bad-parent detection from the costs of pieces children downloaded from one parent.

Following Dragonfly's rule, the newest cost is compared with the costs before it:

- fewer than ``window`` costs in all: too few to assume a normal distribution, so the
  newest cost is an outlier when ``cost > factor x mean`` (factor 20 by default);
- a full window: the newest cost is an outlier when
  ``cost > mean + sigmas x stdev`` (three sigma by default) and ``cost > min_ratio x mean``.

``mean`` and ``stdev`` (population) are over the earlier costs in the window. The window
slides, so a parent that slowed down for good stops looking like an outlier once its new
costs fill the window. The verdict is computed when a cost arrives (O(window), a constant),
so the filter asking "is this parent bad?" costs O(1).
"""

from __future__ import annotations

import math
from array import array


class PieceCostWindow:
    """The last ``window`` piece costs (seconds) of one parent and its current verdict."""

    __slots__ = (
        "_costs_s",
        "_count",
        "_next",
        "_factor",
        "_min_ratio",
        "_sigmas",
        "_window",
        "bad_since_s",
    )

    def __init__(self, window: int, factor: float, sigmas: float, min_ratio: float) -> None:
        if window < 2:
            raise ValueError("window must be >= 2")
        # A ring of plain doubles: the costs sit side by side in memory, where a deque
        # of float objects scattered them (a scheduler reads one window per report).
        # The sums below are exact (``math.fsum``), so the order the ring keeps the
        # costs in does not matter.
        self._costs_s = array("d", bytes(8 * window))
        self._count = 0  # costs held, up to ``window``
        self._next = 0  # where the next cost goes: the oldest, once the ring is full
        self._window = window
        self._factor = factor
        self._sigmas = sigmas
        self._min_ratio = min_ratio
        # When the newest cost was judged an outlier; None while the parent looks healthy.
        self.bad_since_s: float | None = None

    def add(self, cost_s: float, now: float) -> bool:
        """Record one piece cost; returns whether this cost marks the parent as bad."""
        count = self._count
        window = self._window
        costs = self._costs_s
        outlier = False
        if count:
            earlier = costs if count == window else costs[:count]  # before this cost
            mean = math.fsum(earlier) / count
            if count + 1 < window:
                outlier = cost_s > self._factor * mean
            # The threshold below is at least ``min_ratio x mean``, so a cost at most that
            # is no outlier whatever the spread: most costs stop here, without the
            # variance.
            elif not cost_s <= self._min_ratio * mean:
                variance = math.fsum((c - mean) ** 2 for c in earlier) / count
                threshold = max(mean + self._sigmas * math.sqrt(variance), self._min_ratio * mean)
                outlier = cost_s > threshold
        position = self._next
        costs[position] = cost_s
        self._next = position + 1 if position + 1 < window else 0
        if count < window:
            self._count = count + 1
        self.bad_since_s = now if outlier else None
        return outlier

    def is_bad(self, now: float, ttl_s: float) -> bool:
        """Bad if the newest cost was an outlier less than ``ttl_s`` ago."""
        return self.bad_since_s is not None and now - self.bad_since_s < ttl_s

    def __len__(self) -> int:
        return self._count
