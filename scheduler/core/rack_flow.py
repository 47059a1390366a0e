"""Is a rack's uplink congested? Learned from the pieces its peers report, per rack.

A rack behind an oversubscribed uplink shows it in the piece costs: pieces its peers
fetch from normal peers of other racks arrive far slower than those they fetch inside
the rack, because every cross-rack transfer into the rack shares one downlink. Then
each extra cross-rack transfer only slows the others and sends bytes over the uplink
that a rack-mate could pass on instead (p2psim, the cluster benchmark's two racks behind
12:1 uplinks: 9.2 copies of the image crossed rack uplinks where 3 would do).

So the scheduler keeps, per rack, two moving averages of ln(bytes/s) of reported pieces:
from normal peers of other racks and from peers of the same rack. Pieces from seed peers
count in neither: a seed is outside every rack and, early on, the only source, so its
pieces say nothing about the uplink in particular. The rack counts as congested once
both averages have enough pieces behind them and the cross-rack one is below the
in-rack one by more than a ratio (``SchedulerSettings.rack_congestion_*``). The verdict
follows the averages back: with fewer cross-rack transfers the remaining ones speed up,
and the rack opens again.

Where no rack is congested (no labels, a flat network, uplinks that are no bottleneck)
nothing changes. Measured with p2psim: the cluster benchmark's racks 4.15 -> 2.46x the
lower bound (median of 8 seeds), 9.2 -> 4.7 copies across the uplinks; the shipped
1,000-node default, oversubscribed and stragglers scenarios (uplinks of 4 to 14 NICs)
within seed-to-seed noise.
"""

from __future__ import annotations

import math

RackKey = tuple[str, str]
# Weight of the newest piece in a rack's averages. A rack's peers report many pieces a
# second, from many parents, so the averages can afford to span more of them than one
# host's (``scheduler.core.model.THROUGHPUT_EWMA_WEIGHT``, a fifth): with one in twenty,
# a burst of slow pieces does not flip the verdict back and forth. p2psim, the cluster
# benchmark's racks (8 seeds): 2.46x the bound against 2.57x with a fifth; the shipped
# 1,000-node default (12 seeds): a mean of 6.26x the bound against 6.36x (6.24x off).
RACK_FLOW_EWMA_WEIGHT = 0.05


class RackFlows:
    """Per rack: the moving averages of cross-rack and in-rack piece throughput, and
    the racks they show congested."""

    __slots__ = ("_flows", "congested")

    def __init__(self) -> None:
        # rack -> [cross-rack average, cross-rack pieces, in-rack average, in-rack pieces]
        self._flows: dict[RackKey, list[float]] = {}
        # Judged at each piece a rack's peers report, so a decision only looks it up.
        self.congested: set[RackKey] = set()

    def record(
        self,
        rack: RackKey,
        same_rack: bool,
        size_bytes: int,
        cost_s: float,
        ratio: float,
        min_samples: int,
    ) -> None:
        """One piece a peer of ``rack`` got from a normal peer (``same_rack``: of its rack).

        The rack is congested while its cross-rack average is over ``ratio`` times below
        its in-rack one, both over ``min_samples`` pieces or more; ratio 0: never.
        """
        if size_bytes <= 0 or cost_s <= 0:
            return
        flow = self._flows.get(rack)
        if flow is None:
            flow = self._flows[rack] = [0.0, 0.0, 0.0, 0.0]
        at = 2 if same_rack else 0
        value = math.log(size_bytes / cost_s)
        average = flow[at]
        flow[at] = average + RACK_FLOW_EWMA_WEIGHT * (value - average) if flow[at + 1] else value
        flow[at + 1] += 1
        cross, cross_n, inside, inside_n = flow
        if ratio and min(cross_n, inside_n) >= min_samples and cross < inside - math.log(ratio):
            self.congested.add(rack)
        else:
            self.congested.discard(rack)
