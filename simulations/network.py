"""Flow-level bandwidth sharing over capacitated links.

A flow is one piece in flight; it crosses a few links (the sender's NIC upload, rack
uplinks, the receiver's NIC download, the registry's egress). Rates change only when a
flow starts or finishes, and between those events every flow moves at a constant rate,
so its completion time is known and queued as an event.

Two sharing rules:

- ``fast`` (the bottleneck rule): ``rate(f) = min over links L of f of capacity(L) / n(L)``
  where ``n(L)`` counts the flows on ``L``. A rate depends only on flow counts, never on
  other flows' rates, so a start or finish changes only flows sharing a link with it, and
  only those whose minimum moves. Every link stays within capacity; capacity a flow
  cannot use because it is held back elsewhere is left idle (not work-conserving).
- ``exact`` (max-min fairness by progressive filling): all flows grow together; when a
  link fills, its flows freeze at that rate; repeat. Work-conserving and exact, but
  O(links x flows) per event: a reference for small clusters.
"""

from __future__ import annotations

from collections.abc import Callable

from simulations.clock import EventQueue

FlowDone = Callable[["Flow", float], None]


class Link:
    __slots__ = (
        "name",
        "capacity_bps",
        "flows",
        "share_bps",
        "max_rate_bps",
        "bound_count",
        "rated_share_bps",
    )

    def __init__(self, name: str, capacity_bps: float) -> None:
        if not capacity_bps > 0:
            raise ValueError(f"link {name}: capacity must be > 0, got {capacity_bps!r}")
        self.name = name
        self.capacity_bps = capacity_bps
        # Ordered by flow id, so iteration order is the same in every run.
        self.flows: dict[int, Flow] = {}
        self.share_bps = capacity_bps
        # An upper bound on the rates of this link's flows (exact after a full pass).
        self.max_rate_bps = 0.0
        # Flows whose rate is set by this link (their first minimum).
        self.bound_count = 0
        # The share its bound flows were last re-rated at (see ``rise_tolerance``).
        self.rated_share_bps = capacity_bps


class Flow:
    __slots__ = (
        "flow_id",
        "links",
        "size_bytes",
        "remaining_bytes",
        "rate_bps",
        "updated_at_s",
        "started_at_s",
        "version",
        "due_s",
        "bottleneck",
        "on_done",
        "done",
    )

    def __init__(
        self, flow_id: int, links: tuple[Link, ...], size_bytes: int, now: float, on_done: FlowDone
    ) -> None:
        self.flow_id = flow_id
        self.links = links
        self.size_bytes = size_bytes
        self.remaining_bytes = float(size_bytes)
        self.rate_bps = 0.0
        self.updated_at_s = now
        self.started_at_s = now
        self.version = 0
        self.due_s = float("inf")
        self.bottleneck: Link | None = None
        self.on_done = on_done
        self.done = False


class Network:
    """Active flows on links; completions are events on the shared ``EventQueue``."""

    def __init__(
        self, queue: EventQueue, sharing: str = "fast", rise_tolerance: float = 0.0
    ) -> None:
        if sharing not in ("fast", "exact"):
            raise ValueError(f"sharing must be 'fast' or 'exact', got {sharing!r}")
        if not rise_tolerance >= 0:
            raise ValueError("rise_tolerance must be >= 0")
        self.queue = queue
        self.sharing = sharing
        # Fast rule only: when a link's share rises by at most this fraction since its
        # flows were last rated, they keep their rates. A share never falls below a
        # flow's rate (links stay within capacity); at most this fraction of a link is
        # left idle. It spares re-rating every flow of a busy link when one flow ends
        # and the next starts a request latency later (n-1 flows, then n again).
        self.rise_tolerance = rise_tolerance
        self._next_id = 0
        self.active: dict[int, Flow] = {}
        self._busy_links: dict[str, Link] = {}
        self.bytes_done = 0

    def link(self, name: str, capacity_bps: float) -> Link:
        return Link(name, capacity_bps)

    def start(
        self, links: tuple[Link, ...], size_bytes: int, now: float, on_done: FlowDone
    ) -> Flow:
        """Start a flow of ``size_bytes`` over ``links``; ``on_done(flow, t)`` at its end."""
        if not links:
            raise ValueError("a flow needs at least one link")
        self._next_id += 1
        flow = Flow(self._next_id, links, size_bytes, now, on_done)
        self.active[flow.flow_id] = flow
        if size_bytes <= 0:
            flow.due_s = now
            self.queue.at(now, self._complete, (flow, flow.version))
            return flow
        for link in links:
            link.flows[flow.flow_id] = flow
            link.share_bps = link.capacity_bps / len(link.flows)
            self._busy_links[link.name] = link
        if self.sharing == "exact":
            self._refill(now)
            return flow
        self._set_rate(flow, now)
        for link in links:
            # The share fell: flows faster than it must slow down.
            if link.max_rate_bps > link.share_bps:
                self._rescan(link, now, fell=True)
            elif link.share_bps < link.rated_share_bps:
                link.rated_share_bps = link.share_bps
        return flow

    # -- internals -------------------------------------------------------------------

    def _complete(self, now: float, arg: tuple[Flow, int]) -> None:
        flow, version = arg
        if flow.done or version != flow.version:
            return  # superseded by a rate change
        if flow.due_s > now:
            # The flow slowed down since this event was queued: it ends later.
            self.queue.at(flow.due_s, self._complete, (flow, flow.version))
            return
        flow.done = True
        flow.remaining_bytes = 0.0
        del self.active[flow.flow_id]
        self.bytes_done += flow.size_bytes
        for link in flow.links:
            if flow.size_bytes <= 0:
                break
            del link.flows[flow.flow_id]
            if flow.bottleneck is link:
                link.bound_count -= 1
            if link.flows:
                link.share_bps = link.capacity_bps / len(link.flows)
            else:
                link.share_bps = link.capacity_bps
                link.max_rate_bps = 0.0
                link.bound_count = 0
                link.rated_share_bps = link.capacity_bps
                del self._busy_links[link.name]
        flow.bottleneck = None
        if flow.size_bytes > 0:
            if self.sharing == "exact":
                self._refill(now)
            else:
                for link in flow.links:
                    # The share rose: flows held back by this link may speed up.
                    if link.bound_count > 0 and link.share_bps > link.rated_share_bps * (
                        1.0 + self.rise_tolerance
                    ):
                        self._rescan(link, now, fell=False)
        flow.on_done(flow, now)

    def _rescan(self, link: Link, now: float, fell: bool) -> None:
        """Re-rate the flows of ``link`` whose minimum may have moved with its share."""
        highest = 0.0
        share = link.share_bps
        for flow in link.flows.values():
            if (flow.rate_bps > share) if fell else (flow.bottleneck is link):
                self._set_rate(flow, now)
            if flow.rate_bps > highest:
                highest = flow.rate_bps
        link.max_rate_bps = highest
        link.rated_share_bps = share

    def _set_rate(self, flow: Flow, now: float) -> None:
        best: Link | None = None
        rate = float("inf")
        for link in flow.links:
            if link.share_bps < rate:
                rate, best = link.share_bps, link
        if flow.bottleneck is not best:
            if flow.bottleneck is not None:
                flow.bottleneck.bound_count -= 1
            if best is not None:
                best.bound_count += 1
            flow.bottleneck = best
        self._apply_rate(flow, rate, now)

    def _apply_rate(self, flow: Flow, rate: float, now: float) -> None:
        for link in flow.links:
            if rate > link.max_rate_bps:
                link.max_rate_bps = rate
        if rate == flow.rate_bps:
            return
        if flow.rate_bps > 0:
            flow.remaining_bytes -= flow.rate_bps * (now - flow.updated_at_s)
            if flow.remaining_bytes < 0:
                flow.remaining_bytes = 0.0
        flow.updated_at_s = now
        flow.rate_bps = rate
        due_s = now + flow.remaining_bytes / rate
        if due_s < flow.due_s:
            # Earlier than the queued event: queue another and let the old one lapse.
            # Later: the queued event finds the flow not yet done and queues this time.
            flow.version += 1
            self.queue.at(due_s, self._complete, (flow, flow.version))
        flow.due_s = due_s

    def _refill(self, now: float) -> None:
        """Max-min fair rates for every active flow, by progressive filling."""
        capacity = {name: link.capacity_bps for name, link in self._busy_links.items()}
        unfrozen = {name: len(link.flows) for name, link in self._busy_links.items()}
        rates: dict[int, float] = {}
        while unfrozen:
            name = min(unfrozen, key=lambda n: capacity[n] / unfrozen[n])
            share = max(0.0, capacity[name] / unfrozen[name])
            for flow in self._busy_links[name].flows.values():
                if flow.flow_id in rates:
                    continue
                rates[flow.flow_id] = share
                for link in flow.links:
                    capacity[link.name] -= share
                    unfrozen[link.name] -= 1
                    if unfrozen[link.name] == 0:
                        del unfrozen[link.name]
        for flow_id, rate in rates.items():
            flow = self.active[flow_id]
            if rate <= 0:
                # Rounding left a link with nothing; the next event gives it a share.
                rate = 1e-9
            self._apply_rate(flow, rate, now)
