"""Max-min fair rates by progressive filling: the exact reference for the fast rule.

Every flow's rate rises together from zero; when a link's capacity is used up, its flows
freeze at the level reached, and the others keep rising. The level at which a link fills
is ``(capacity - rates of its frozen flows) / its unfrozen flows``, so the next link to
fill is the one with the lowest such level: a heap of links keyed by it, with stale keys
dropped when popped, makes one refill O(F x k log L) for F flows of k links on L links.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulations.network import Link


def max_min_rates(links: Iterable[Link]) -> dict[int, float]:
    """Flow id -> max-min fair rate, for every flow crossing ``links``."""
    left: dict[int, float] = {}
    unfrozen: dict[int, int] = {}
    by_id: dict[int, Link] = {}
    heap: list[tuple[float, int, int]] = []
    # Links enter in the caller's order and ties break by that order, so the result
    # (and the rounding in it) is the same in every run.
    for order, link in enumerate(links):
        key = id(link)
        by_id[key] = link
        left[key] = link.capacity_bps
        unfrozen[key] = len(link.flows)
        heap.append((link.capacity_bps / len(link.flows), order, key))
    order_of = {key: order for order, key in enumerate(by_id)}
    heapq.heapify(heap)
    rates: dict[int, float] = {}
    while heap:
        level, _, key = heapq.heappop(heap)
        count = unfrozen.get(key, 0)
        if count == 0 or level != left[key] / count:
            continue  # stale: the link filled already or its level moved since
        level = max(0.0, level)
        for flow_id, flow in by_id[key].flows.items():
            if flow_id in rates:
                continue
            rates[flow_id] = level
            for link in flow.links:
                other = id(link)
                left[other] -= level
                unfrozen[other] -= 1
                if other != key and unfrozen[other] > 0:
                    heapq.heappush(heap, (left[other] / unfrozen[other], order_of[other], other))
    return rates
