"""Max-min fair rates by progressive filling: the exact reference for the fast rule.

Every flow's rate rises together from zero; when a link's capacity is used up, its flows
freeze at the level reached, and the others keep rising. The level at which a link fills
is ``(capacity - rates of its frozen flows) / its unfrozen flows``, so the next link to
fill is the one with the lowest such level: a heap of links keyed by it, with stale keys
dropped when popped, makes one refill O(F x k log L) for F flows of k links on L links.
A link filling moves the levels of the links its flows cross; each of those gets one new
key once all of that link's flows are frozen, not one per flow.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulations.links import Link


def max_min_rates(links: Iterable[Link]) -> dict[int, float]:
    """Flow id -> max-min fair rate, for every flow crossing ``links``."""
    left: dict[Link, float] = {}
    unfrozen: dict[Link, int] = {}
    order_of: dict[Link, int] = {}
    by_order: list[Link] = []
    heap: list[tuple[float, int]] = []
    # Links enter in the caller's order and ties break by that order, so the result
    # (and the rounding in it) is the same in every run. (Links hash by identity.)
    for order, link in enumerate(links):
        count = len(link.flows)
        left[link] = link.capacity_bps
        unfrozen[link] = count
        order_of[link] = order
        by_order.append(link)
        heap.append((link.capacity_bps / count, order))
    heapq.heapify(heap)
    rates: dict[int, float] = {}
    while heap:
        level, order = heapq.heappop(heap)
        full = by_order[order]
        count = unfrozen[full]
        if count == 0 or level != left[full] / count:
            continue  # stale: the link filled already or its level moved since
        level = max(0.0, level)
        moved: dict[Link, None] = {}
        for flow_id, flow in full.flows.items():
            if flow_id in rates:
                continue
            rates[flow_id] = level
            for link in flow.links:
                left[link] -= level
                unfrozen[link] -= 1
                moved[link] = None
        for link in moved:
            count = unfrozen[link]
            if count > 0:
                heapq.heappush(heap, (left[link] / count, order_of[link]))
    return rates
