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
from collections import deque


class PieceCostWindow:
    """The last ``window`` piece costs (seconds) of one parent and its current verdict."""

    __slots__ = ("_costs_s", "_factor", "_min_ratio", "_sigmas", "bad_since_s")

    def __init__(self, window: int, factor: float, sigmas: float, min_ratio: float) -> None:
        if window < 2:
            raise ValueError("window must be >= 2")
        self._costs_s: deque[float] = deque(maxlen=window)
        self._factor = factor
        self._sigmas = sigmas
        self._min_ratio = min_ratio
        # When the newest cost was judged an outlier; None while the parent looks healthy.
        self.bad_since_s: float | None = None

    def add(self, cost_s: float, now: float) -> bool:
        """Record one piece cost; returns whether this cost marks the parent as bad."""
        earlier = list(self._costs_s)
        self._costs_s.append(cost_s)
        outlier = self._is_outlier(cost_s, earlier)
        self.bad_since_s = now if outlier else None
        return outlier

    def is_bad(self, now: float, ttl_s: float) -> bool:
        """Bad if the newest cost was an outlier less than ``ttl_s`` ago."""
        return self.bad_since_s is not None and now - self.bad_since_s < ttl_s

    def __len__(self) -> int:
        return len(self._costs_s)

    def _is_outlier(self, cost_s: float, earlier: list[float]) -> bool:
        if not earlier:
            return False
        mean = math.fsum(earlier) / len(earlier)
        if len(earlier) + 1 < self._window:
            return cost_s > self._factor * mean
        variance = math.fsum((c - mean) ** 2 for c in earlier) / len(earlier)
        threshold = max(mean + self._sigmas * math.sqrt(variance), self._min_ratio * mean)
        return cost_s > threshold

    @property
    def _window(self) -> int:
        maxlen = self._costs_s.maxlen
        assert maxlen is not None
        return maxlen
