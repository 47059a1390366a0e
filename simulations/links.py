"""Links and flows: the state the network's sharing rules work on (see
``simulations.network``, whose docstring explains the fields' roles)."""

from __future__ import annotations

import math
from collections.abc import Callable

FlowDone = Callable[["Flow", float], None]
INF = math.inf
# A flow this close to its finish tag is done: the tag and the clock are sums of many
# float products, so they can miss each other by a few ulps (a millibyte is nothing).
FINISH_SLACK_BYTES = 1e-3


class Link:
    __slots__ = (
        "name",
        "capacity_bps",
        "flows",
        "rate_bps",
        "served_bytes",
        "served_at_s",
        "bound",
        "heap",
        "others_max_bps",
        "due_s",
        "version",
        "down",
        "fills",
        "fill_bound",
        "elsewhere_bps",
    )

    def __init__(self, name: str, capacity_bps: float, fills: bool = False) -> None:
        if not capacity_bps > 0:
            raise ValueError(f"link {name}: capacity must be > 0, got {capacity_bps!r}")
        self.name = name
        self.capacity_bps = capacity_bps
        # Every flow crossing the link, ordered by flow id, so iteration order is the
        # same in every run.
        self.flows: dict[int, Flow] = {}
        # The rate of every flow bound here; at most capacity / len(flows).
        self.rate_bps = capacity_bps
        self.served_bytes = 0.0
        self.served_at_s = 0.0
        self.bound: dict[int, Flow] = {}
        # (finish tag, flow id, flow) of bound flows; entries of flows that moved away
        # stay until they reach the top and are dropped there.
        self.heap: list[tuple[float, int, Flow]] = []
        # An upper bound on the rates of the flows crossing it that are bound elsewhere.
        self.others_max_bps = 0.0
        # When the earliest bound flow finishes, and the version of that queued event.
        self.due_s = INF
        self.version = 0
        self.down = False
        # A filling link gives what its flows held back elsewhere leave to its other
        # flows (see "Filling links" above).
        self.fills = fills
        # Flows bound here that cross a filling link (this one is not filling).
        self.fill_bound = 0
        # A filling link: the summed rates of its flows bound elsewhere.
        self.elsewhere_bps = 0.0

    def advance(self, now: float) -> None:
        """Move the virtual clock to ``now`` at the current rate.

        The network's hot paths repeat these three lines instead of calling this: it
        runs a few million times a run, and the call cost more than its body."""
        if now > self.served_at_s:
            self.served_bytes += self.rate_bps * (now - self.served_at_s)
            self.served_at_s = now


class Flow:
    __slots__ = (
        "flow_id",
        "links",
        "size_bytes",
        "started_at_s",
        "on_done",
        "done",
        "bottleneck",
        "finish_tag",
        "failed",
        "context",
        "fill",
    )

    def __init__(
        self,
        flow_id: int,
        links: tuple[Link, ...],
        size_bytes: int,
        now: float,
        on_done: FlowDone,
        context: object = None,
    ) -> None:
        self.flow_id = flow_id
        self.links = links
        self.size_bytes = size_bytes
        self.started_at_s = now
        self.on_done = on_done
        # Whatever the starter wants back in ``on_done`` (saves it a closure per flow).
        self.context = context
        self.done = False
        # The link (or exact-mode lane) whose clock this flow runs on.
        self.bottleneck: Link | None = None
        self.finish_tag = 0.0
        # It ended because a link on its path failed; its bytes never arrived.
        self.failed = False
        # The filling link on its path, if any (fast rule only).
        self.fill: Link | None = None

    @property
    def rate_bps(self) -> float:
        bottleneck = self.bottleneck
        return 0.0 if bottleneck is None or self.done else bottleneck.rate_bps

    def remaining_bytes(self, now: float) -> float:
        bottleneck = self.bottleneck
        if self.done:
            return 0.0
        if bottleneck is None:
            return float(self.size_bytes)
        bottleneck.advance(now)
        return max(0.0, self.finish_tag - bottleneck.served_bytes)
