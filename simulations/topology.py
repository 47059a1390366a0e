"""The modelled cluster: hosts in racks, rack uplinks to a core, a registry at the core.

Paths (the links one piece transfer crosses):

- peer to peer, same rack: sender NIC up, receiver NIC down;
- peer to peer, across racks: sender NIC up, sender rack up, receiver rack down,
  receiver NIC down (the core is non-blocking);
- registry to peer: registry egress, receiver rack down, receiver NIC down.

A rack's uplink carries ``hosts_per_rack x NIC / oversubscription`` each way, whatever
number of hosts it actually holds: the switch's uplinks are cabled for a full rack. With
a NIC mix, NIC is the mix's mean speed.

Each node's NIC speed comes from the scenario's NIC mix (in its proportions, shuffled)
and stragglers move bytes at a fraction of it; both draw from their own seeded streams,
so every strategy run with the same seed sees the same cluster (common random numbers).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass

from simulations.network import Link, Network
from simulations.scenario import Scenario

SEED_RACK = "rack-seed"


@dataclass(eq=False, slots=True)
class SimHost:
    host_id: str
    index: int
    rack: str
    up: Link
    down: Link
    rack_up: Link
    rack_down: Link
    is_seed: bool
    # What the links really carry; the scheduler is told the announced figures.
    upload_bps: float
    download_bps: float
    announced_upload_bps: float
    announced_download_bps: float
    is_straggler: bool = False
    # Set by churn (simulations.churn) when the host fails; it never comes back.
    failed: bool = False


class Registry:
    """The origin: an egress link and a bound on transfers served at once (FIFO line)."""

    def __init__(self, egress: Link, max_transfers: int) -> None:
        self.egress = egress
        self.max_transfers = max_transfers
        self.active = 0
        self.peak_active = 0
        self.peak_waiting = 0
        self.bytes_served = 0
        self._waiting: collections.deque[Callable[[float], None]] = collections.deque()

    def acquire(self, now: float, start: Callable[[float], None]) -> None:
        """Run ``start(now)`` when a transfer slot is free (at once if one is)."""
        if self.active < self.max_transfers:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            start(now)
        else:
            self._waiting.append(start)
            self.peak_waiting = max(self.peak_waiting, len(self._waiting))

    def release(self, now: float) -> None:
        if self._waiting:
            self._waiting.popleft()(now)  # the slot passes straight on
        else:
            self.active -= 1


class Cluster:
    def __init__(self, scenario: Scenario, network: Network) -> None:
        self.scenario = scenario
        self.network = network
        nics = _node_nics(scenario)
        stragglers = _stragglers(scenario)
        mean_up = sum(up for up, _ in nics) / len(nics) if nics else scenario.host_upload_bps
        mean_down = sum(d for _, d in nics) / len(nics) if nics else scenario.host_download_bps
        rack_up_bps = scenario.hosts_per_rack * mean_up / scenario.oversubscription
        rack_down_bps = scenario.hosts_per_rack * mean_down / scenario.oversubscription
        self._racks: dict[str, tuple[Link, Link]] = {}

        def rack_links(rack: str) -> tuple[Link, Link]:
            if rack not in self._racks:
                self._racks[rack] = (
                    network.link(f"{rack}/up", rack_up_bps),
                    network.link(f"{rack}/down", rack_down_bps),
                )
            return self._racks[rack]

        self.hosts: list[SimHost] = []
        for index in range(scenario.seed_peers + scenario.nodes):
            is_seed = index < scenario.seed_peers
            nic_up, nic_down = scenario.host_upload_bps, scenario.host_download_bps
            factor = 1.0
            if is_seed:
                host_id, rack = f"seed-{index:03d}", SEED_RACK
            else:
                node = index - scenario.seed_peers
                host_id, rack = f"node-{node:05d}", f"rack-{node // scenario.hosts_per_rack:04d}"
                if nics:
                    nic_up, nic_down = nics[node]
                if node in stragglers:
                    factor = scenario.straggler_factor
            up, down = rack_links(rack)
            self.hosts.append(
                SimHost(
                    host_id=host_id,
                    index=index,
                    rack=rack,
                    up=network.link(f"{host_id}/up", nic_up * factor),
                    down=network.link(f"{host_id}/down", nic_down * factor),
                    rack_up=up,
                    rack_down=down,
                    is_seed=is_seed,
                    upload_bps=nic_up * factor,
                    download_bps=nic_down * factor,
                    announced_upload_bps=nic_up,
                    announced_download_bps=nic_down,
                    is_straggler=factor != 1.0,
                )
            )
        self.registry = Registry(
            # Filling: what transfers held back downstream (a full rack, a slow NIC)
            # leave of the egress goes to the others, as TCP would give it.
            network.link("registry/egress", scenario.registry_egress_bps, fills=True),
            scenario.registry_max_transfers,
        )

    @property
    def rack_count(self) -> int:
        return len(self._racks)

    @staticmethod
    def peer_path(src: SimHost, dst: SimHost) -> tuple[Link, ...]:
        if src.rack == dst.rack:
            return (src.up, dst.down)
        return (src.up, src.rack_up, dst.rack_down, dst.down)

    def registry_path(self, dst: SimHost) -> tuple[Link, ...]:
        return (self.registry.egress, dst.rack_down, dst.down)


def _node_nics(scenario: Scenario) -> list[tuple[float, float]]:
    """(up, down) bytes/s per node from the NIC mix: exact proportions, shuffled."""
    speeds = scenario.nic_speeds_bps()
    if not speeds:
        return []
    nodes = scenario.nodes
    counts = [int(share * nodes) for _, share in speeds]
    # Largest remainders get the nodes that rounding down left over, so a mix of
    # 1/3 each over 10 nodes gives 4, 3, 3 and never drops a node.
    by_remainder = sorted(
        range(len(speeds)), key=lambda i: (-(speeds[i][1] * nodes - counts[i]), i)
    )
    for i in by_remainder[: nodes - sum(counts)]:
        counts[i] += 1
    nics = [
        (bps, bps) for (bps, _), count in zip(speeds, counts, strict=True) for _ in range(count)
    ]
    random.Random(f"{scenario.seed}/nics").shuffle(nics)
    return nics


def _stragglers(scenario: Scenario) -> set[int]:
    """Indices of the nodes that are stragglers."""
    count = round(scenario.straggler_fraction * scenario.nodes)
    return set(random.Random(f"{scenario.seed}/stragglers").sample(range(scenario.nodes), count))
