"""Flow-level bandwidth sharing over capacitated links.

A flow is one piece in flight; it crosses a few links (the sender's NIC upload, rack
uplinks, the receiver's NIC download, the registry's egress). Rates change only when a
flow starts, finishes or is cancelled; in between every flow moves at a constant rate.

Two sharing rules:

- ``fast`` (the bottleneck rule): ``rate(f) = min over links L of f of capacity(L) / n(L)``
  where ``n(L)`` counts the flows on ``L``. Every link stays within capacity; capacity a
  flow cannot use because it is held back elsewhere is left idle (not work-conserving),
  except on the one *filling* link (the registry's egress, see below).
- ``exact`` (max-min fairness by progressive filling, see ``simulations.maxmin``):
  work-conserving, but every event recomputes every rate: a reference for small clusters.

How the fast rule stays cheap. Each flow is *bound* to the link that sets its rate (its
minimum), and every flow bound to a link runs at that link's ``rate_bps``. A link keeps
a virtual clock, ``served_bytes``: the bytes one bound flow has received since the link
was made. A bound flow finishes when the clock reaches its ``finish_tag`` (the clock when
it was bound plus its remaining bytes), so a change in a link's flow count changes one
number, the link's rate, and never touches the flows bound to it; the link queues one
event, for its earliest tag. A flow moves to another link only when the minimum moves:

- a link's rate falls (a flow started on it): flows crossing it that are bound elsewhere
  at a higher rate move to it; ``others_max_bps`` bounds their rates from above, so most
  starts look at no other flow;
- a link's rate rises (a flow left it): each flow bound to it is checked against its
  other links, and moves to one that is now lower.

``rise_tolerance`` spares most rises: while a link's fair share is at most that fraction
above its rate, the rate stays (the link may idle that fraction). It pays off on a busy
link when one flow ends and the next starts a request latency later (n-1 flows, then n).

Why not water-filling everywhere. Max-min gives what a flow held back elsewhere leaves
of a link to the link's other flows; at sampled instants of a swarm the bottleneck rule
delivers 94-96% of its throughput. An incremental water-filling of every link was tried:
on a swarm's NIC links every piece moves a rate by a quarter or a third and each change
reaches a few more links, so the 1000-node default run executed 13-17% more
instructions (seeds 0 and 1), while the means of fast against exact moved by about 1%,
under the protocol's own noise (see the sharing tests in
tests/unit/simulations/test_sim_swarm.py).

Filling links. The bias did show in one place: direct pulls through a registry whose
egress equals the racks' downlinks added up (7.7% over exact). There one link, the
registry's egress, *fills*: its rate is the water level ``w`` with ``capacity =
sum(min(r, w))`` over its flows, ``r`` being what a flow's other links allow. Its flows
with ``r < w`` stay bound elsewhere and the rest are bound to it at ``w``. It keeps
the summed rates of its flows bound elsewhere (``elsewhere_bps``), updated as their
links' rates move (each link counts its bound flows that cross the filling link), so
settling the level after a change costs nothing unless flows have to move. The other
links keep the bottleneck rule, and a rise of the level within ``rise_tolerance`` is
spared as theirs are. That case is now within 1% of exact; the default 1000-node run
takes the same time (few flows cross the registry), a 1000-node direct pull a fifth
more. At most one link fills: the level takes the other links' rates as given, which
two filling links on one path would not be.

The exact mode reuses the same clocks: each flow gets a private *lane* link whose rate is
the flow's max-min rate.

A link can fail (its host crashed): the flows on it end at once with ``failed`` set, and
any flow started over it later fails at once too; ``on_done`` is called either way, so
whoever started the flow does its bookkeeping in one place.
"""

from __future__ import annotations

from heapq import heappop, heappush

from simulations.clock import EventQueue
from simulations.links import FINISH_SLACK_BYTES, INF, Flow, FlowDone, Link
from simulations.maxmin import max_min_rates

__all__ = ["Flow", "FlowDone", "Link", "Network"]


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
        self._exact = sharing == "exact"
        self._rise = 1.0 + rise_tolerance
        self._next_id = 0
        self.active: dict[int, Flow] = {}
        self.bytes_done = 0
        # Exact mode: links with flows, and whether a refill is queued for this instant.
        self._busy: dict[int, Link] = {}
        self._refill_queued = False
        # Links failed so far: while none has, starting a flow need not look for one.
        self._links_down = 0
        # The one filling link (fast rule), and whether its level may be stale.
        self._fill: Link | None = None
        self._fill_stale = False
        # Bound once: a bound method made per queued event is an allocation per event.
        self._link_due_callback = self._link_due

    def link(self, name: str, capacity_bps: float, fills: bool = False) -> Link:
        """A link; ``fills``: it gives its flows what others leave (at most one link).

        The exact mode fills every link anyway, so there the flag changes nothing."""
        link = Link(name, capacity_bps, fills and not self._exact)
        if link.fills:
            if self._fill is not None:
                raise ValueError(f"{name}: the network already has a filling link")
            self._fill = link
        return link

    def path_rate_bps(self, links: tuple[Link, ...]) -> float:
        """The rate one more flow over ``links`` would get now, by the bottleneck rule."""
        return min(link.capacity_bps / (len(link.flows) + 1) for link in links)

    def start(
        self,
        links: tuple[Link, ...],
        size_bytes: int,
        now: float,
        on_done: FlowDone,
        context: object = None,
    ) -> Flow:
        """Start a flow of ``size_bytes`` over ``links``; ``on_done(flow, t)`` at its end.

        ``context`` is kept as ``flow.context`` for ``on_done``."""
        if not links:
            raise ValueError("a flow needs at least one link")
        self._next_id += 1
        flow_id = self._next_id
        flow = Flow(flow_id, links, size_bytes, now, on_done, context)
        self.active[flow_id] = flow
        if size_bytes <= 0 or (self._links_down and any(link.down for link in links)):
            flow.failed = size_bytes > 0
            self.queue.at(now, self._end_now, flow)
            return flow
        if self._exact:
            for link in links:
                link.flows[flow_id] = flow
            self._start_exact(flow, now)
            return flow
        best: Link = links[0]
        best_rate = INF
        fell: list[Link] = []
        fill = self._fill
        for link in links:
            flows = link.flows
            flows[flow_id] = flow
            if link is fill:
                flow.fill = fill
                self._fill_stale = True
                rate = link.rate_bps  # its level; settled below
            else:
                share = link.capacity_bps / len(flows)
                rate = link.rate_bps
                if share < rate:
                    # Bound flows slow down with the clock; their queued completion event
                    # finds them unfinished and queues itself again at the new time.
                    if now > link.served_at_s:
                        link.served_bytes += rate * (now - link.served_at_s)
                        link.served_at_s = now
                    if link.fill_bound:
                        self._elsewhere_changed(link, share - rate)
                    link.rate_bps = rate = share
                    fell.append(link)
            if rate < best_rate:
                best_rate, best = rate, link
        self._bind(flow, best, float(size_bytes), now)
        for link in links:
            if link is not best and best_rate > link.others_max_bps:
                link.others_max_bps = best_rate
        for link in fell:
            if link.others_max_bps > link.rate_bps:
                self._fall_scan(link, now)
        if self._fill_stale:
            self._settle(now)
        return flow

    def cancel(self, flow: Flow, now: float) -> float:
        """Stop a flow without calling ``on_done``; returns the bytes it had moved."""
        if flow.done:
            return 0.0
        moved = flow.size_bytes - flow.remaining_bytes(now)
        flow.done = True
        del self.active[flow.flow_id]
        if flow.size_bytes > 0:
            self._unbind(flow)
            self._detach(flow, now)
            if self._fill_stale:
                self._settle(now)
        return moved

    def fail_links(self, links: tuple[Link, ...], now: float) -> None:
        """The links go down for good: every flow over them fails now, and later ones too."""
        broken: dict[int, Flow] = {}
        for link in links:
            self._links_down += not link.down
            link.down = True
            broken.update(link.flows)
        # By flow id, so the callbacks run in the same order in every run.
        for flow_id in sorted(broken):
            flow = broken[flow_id]
            if flow.done:
                continue
            flow.failed = True
            flow.done = True
            del self.active[flow_id]
            self._unbind(flow)
            self._detach(flow, now)
            if self._fill_stale:
                self._settle(now)
            flow.on_done(flow, now)

    # -- completions -------------------------------------------------------------------

    def _end_now(self, now: float, flow: Flow) -> None:
        """An empty flow, or one over a failed link: it ends at once, moving nothing."""
        if flow.done:
            return
        flow.done = True
        del self.active[flow.flow_id]
        flow.on_done(flow, now)

    def _link_due(self, now: float, arg: tuple[Link, int]) -> None:
        link, version = arg
        if version != link.version:
            return  # superseded: the link queued an earlier event since
        link.due_s = INF
        if now > link.served_at_s:
            link.served_bytes += link.rate_bps * (now - link.served_at_s)
            link.served_at_s = now
        heap = link.heap
        while heap:
            tag, flow_id, flow = heap[0]
            if flow.bottleneck is not link or flow.finish_tag != tag or flow.done:
                heappop(heap)  # the flow moved away or was cancelled
                continue
            if tag - link.served_bytes > FINISH_SLACK_BYTES:
                break
            heappop(heap)
            # The flow is done: off its links, then its owner hears of it.
            flow.done = True
            del self.active[flow_id]
            self.bytes_done += flow.size_bytes
            self._unbind(flow)
            self._detach(flow, now)
            if self._fill_stale:
                self._settle(now)
            flow.on_done(flow, now)
            # Finishing changed rates; any further flow due now gets its own event.
            break
        self._reschedule(link, now)

    def _unbind(self, flow: Flow) -> None:
        bottleneck = flow.bottleneck
        assert bottleneck is not None
        bound = bottleneck.bound
        del bound[flow.flow_id]
        flow.bottleneck = None
        if not bound:
            bottleneck.heap.clear()
        fill = flow.fill
        if fill is not None and bottleneck is not fill:
            bottleneck.fill_bound -= 1
            fill.elsewhere_bps -= bottleneck.rate_bps
            self._fill_stale = True

    def _detach(self, flow: Flow, now: float) -> None:
        """Take a finished or cancelled flow off its links; shares rise."""
        flow_id = flow.flow_id
        if self._exact:
            for link in flow.links:
                del link.flows[flow_id]
                if not link.flows:
                    del self._busy[id(link)]
            self._queue_refill(now)
            return
        rose: list[Link] = []
        rise = self._rise
        for link in flow.links:
            flows = link.flows
            del flows[flow_id]
            if link.fills:
                if not flows:
                    link.rate_bps = link.capacity_bps
                    link.elsewhere_bps = 0.0
                    link.others_max_bps = 0.0
                self._fill_stale = True
                continue
            if flows:
                share = link.capacity_bps / len(flows)
                if not share > link.rate_bps * rise:
                    continue
            else:
                share = link.capacity_bps
                link.others_max_bps = 0.0
            if now > link.served_at_s:
                link.served_bytes += link.rate_bps * (now - link.served_at_s)
                link.served_at_s = now
            if link.fill_bound:
                self._elsewhere_changed(link, share - link.rate_bps)
            link.rate_bps = share
            if flows:
                rose.append(link)
        for link in rose:
            self._rise_scan(link, now)
            self._reschedule(link, now)

    # -- the fast rule -----------------------------------------------------------------

    def _bind(self, flow: Flow, link: Link, remaining: float, now: float) -> None:
        if now > link.served_at_s:
            link.served_bytes += link.rate_bps * (now - link.served_at_s)
            link.served_at_s = now
        tag = link.served_bytes + remaining
        flow.bottleneck = link
        flow.finish_tag = tag
        flow_id = flow.flow_id
        link.bound[flow_id] = flow
        fill = flow.fill
        if fill is not None and link is not fill:
            link.fill_bound += 1
            fill.elsewhere_bps += link.rate_bps
            self._fill_stale = True
        heappush(link.heap, (tag, flow_id, flow))
        due = now + remaining / link.rate_bps
        if due < link.due_s:
            self._queue_due(link, due)

    def _move(self, flow: Flow, target: Link, now: float) -> None:
        """Re-bind a flow to ``target``, carrying its remaining bytes over."""
        source = flow.bottleneck
        assert source is not None
        if now > source.served_at_s:
            source.served_bytes += source.rate_bps * (now - source.served_at_s)
            source.served_at_s = now
        remaining = flow.finish_tag - source.served_bytes
        self._unbind(flow)
        # Its heap entry at the source is now stale; the source's next event may come
        # later than queued, which that event finds out itself.
        self._bind(flow, target, remaining if remaining > 0.0 else 0.0, now)
        rate = target.rate_bps
        for link in flow.links:
            if link is not target and rate > link.others_max_bps:
                link.others_max_bps = rate

    def _rise_scan(self, link: Link, now: float) -> None:
        """The link's rate rose: flows bound here whose other links are now lower move
        to the lowest; the others' links learn the higher rate (``others_max_bps``)."""
        rate = link.rate_bps
        movers: list[Flow] = []
        for bound in link.bound.values():
            for other in bound.links:
                if other is link:
                    continue
                if other.rate_bps < rate:
                    movers.append(bound)
                    break
                if rate > other.others_max_bps:
                    other.others_max_bps = rate
        for bound in movers:
            self._move(bound, _lowest(bound.links), now)

    def _fall_scan(self, link: Link, now: float) -> None:
        """Flows bound elsewhere faster than this link's new rate move to it."""
        rate = link.rate_bps
        highest = 0.0
        movers: list[Flow] = []
        for flow in link.flows.values():
            bottleneck = flow.bottleneck
            if bottleneck is link or bottleneck is None:
                continue
            other = bottleneck.rate_bps
            if other > rate:
                movers.append(flow)
            elif other > highest:
                highest = other
        link.others_max_bps = highest
        for flow in movers:
            self._move(flow, _lowest(flow.links), now)

    # -- the filling link --------------------------------------------------------------

    def _elsewhere_changed(self, link: Link, delta_bps: float) -> None:
        """``link``'s rate moves by ``delta_bps``: so do its bound flows that fill."""
        fill = self._fill
        assert fill is not None
        fill.elsewhere_bps += delta_bps * link.fill_bound
        self._fill_stale = True

    def _settle(self, now: float) -> None:
        """Bring the filling link's rate to its water level.

        The level ``w`` solves ``capacity = sum(min(r, w))`` over its flows, ``r`` being
        the rate a flow's other links allow: flows with ``r < w`` stay bound elsewhere,
        the rest are bound here at ``w``. Each step computes ``w`` from the flows bound
        here, then moves flows: a fall takes in flows elsewhere faster than ``w``, a rise
        lets go of flows bound here whose other links are now slower. Starting from at
        most the level (never below the fair share, which is at most the level), the
        steps only raise ``w`` towards it, each moving at least one flow, so the loop
        ends within a pass over the flows.
        """
        self._fill_stale = False
        link = self._fill
        assert link is not None
        flows = link.flows
        rise = self._rise
        for _ in range(2 * len(flows) + 2):
            if not flows:
                return
            bound = len(link.bound)
            share = link.capacity_bps / len(flows)
            if bound == len(flows):
                link.elsewhere_bps = 0.0  # exact, and rounding drift gone
            left = link.capacity_bps - link.elsewhere_bps
            if bound:
                level = left / bound
                if level < share:
                    level = share
            elif left >= 0.0:
                level = link.capacity_bps  # not a bottleneck: above every flow's rate
            else:
                level = share
            rate = link.rate_bps
            if abs(level - rate) <= 1e-12 * link.capacity_bps or rate < level <= rate * rise:
                break  # settled, or a rise the tolerance spares (as on other links)
            if now > link.served_at_s:
                link.served_bytes += rate * (now - link.served_at_s)
                link.served_at_s = now
            link.rate_bps = level
            if level < rate:
                if link.others_max_bps > level:
                    self._fall_scan(link, now)
            else:
                self._rise_scan(link, now)
            self._reschedule(link, now)
        self._fill_stale = False

    # -- events ------------------------------------------------------------------------

    def _reschedule(self, link: Link, now: float) -> None:
        """Queue the link's next completion if it is earlier than the queued one."""
        heap = link.heap
        while heap:
            tag, _, flow = heap[0]
            if flow.bottleneck is link and flow.finish_tag == tag and not flow.done:
                break
            heappop(heap)
        else:
            link.due_s = INF
            return
        if now > link.served_at_s:
            link.served_bytes += link.rate_bps * (now - link.served_at_s)
            link.served_at_s = now
        # (``x if x > 0.0 else 0.0`` is ``max(0.0, x)`` without the call.)
        left = tag - link.served_bytes
        due = now + (left if left > 0.0 else 0.0) / link.rate_bps
        if due < link.due_s:
            self._queue_due(link, due)
        else:
            # Later than queued: the queued event fires, finds nothing due, comes here.
            link.due_s = due

    def _queue_due(self, link: Link, due: float) -> None:
        link.version += 1
        link.due_s = due
        self.queue.at(due, self._link_due_callback, (link, link.version))

    # -- the exact reference -----------------------------------------------------------

    def _start_exact(self, flow: Flow, now: float) -> None:
        lane = Link(f"lane-{flow.flow_id}", 1.0)
        lane.rate_bps = 0.0  # until the refill gives it its max-min rate
        lane.served_at_s = now
        lane.flows[flow.flow_id] = flow
        flow.bottleneck = lane
        flow.finish_tag = float(flow.size_bytes)
        lane.bound[flow.flow_id] = flow
        lane.heap.append((flow.finish_tag, flow.flow_id, flow))
        for link in flow.links:
            self._busy[id(link)] = link
        self._queue_refill(now)

    def _queue_refill(self, now: float) -> None:
        # One refill per instant: everything that starts or ends at the same time
        # (a burst of requests) shares it, and rates hold from this instant on.
        if not self._refill_queued:
            self._refill_queued = True
            self.queue.at(now, self._refill)

    def _refill(self, now: float, _: object = None) -> None:
        self._refill_queued = False
        rates = max_min_rates(self._busy.values())
        for flow_id, rate in rates.items():
            lane = self.active[flow_id].bottleneck
            assert lane is not None
            if rate != lane.rate_bps:
                lane.advance(now)
                lane.rate_bps = max(rate, 1e-9)  # rounding may leave a link with nothing
                # A slower lane's queued event would fire early and queue itself again;
                # forcing a new one keeps the exact mode free of that subtlety.
                lane.due_s = INF
                self._reschedule(lane, now)


def _lowest(links: tuple[Link, ...]) -> Link:
    best = links[0]
    for link in links:
        if link.rate_bps < best.rate_bps:
            best = link
    return best
