"""The modelled cluster: hosts in racks, rack uplinks to a core, a registry at the core.

Paths (the links one piece transfer crosses):

- peer to peer, same rack: sender NIC up, receiver NIC down;
- peer to peer, across racks: sender NIC up, sender rack up, receiver rack down,
  receiver NIC down (the core is non-blocking);
- registry to peer: registry egress, receiver rack down, receiver NIC down.

A rack's uplink carries ``hosts_per_rack x NIC / oversubscription`` each way, whatever
number of hosts it actually holds: the switch's uplinks are cabled for a full rack.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from simulations.network import Link, Network
from simulations.scenario import Scenario

SEED_RACK = "rack-seed"


@dataclass(eq=False)
class SimHost:
    host_id: str
    index: int
    rack: str
    up: Link
    down: Link
    rack_up: Link
    rack_down: Link
    is_seed: bool
    upload_bps: float
    download_bps: float


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
        rack_up_bps = scenario.hosts_per_rack * scenario.host_upload_bps / scenario.oversubscription
        rack_down_bps = (
            scenario.hosts_per_rack * scenario.host_download_bps / scenario.oversubscription
        )
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
            if is_seed:
                host_id, rack = f"seed-{index:03d}", SEED_RACK
            else:
                node = index - scenario.seed_peers
                host_id, rack = f"node-{node:05d}", f"rack-{node // scenario.hosts_per_rack:04d}"
            up, down = rack_links(rack)
            self.hosts.append(
                SimHost(
                    host_id=host_id,
                    index=index,
                    rack=rack,
                    up=network.link(f"{host_id}/up", scenario.host_upload_bps),
                    down=network.link(f"{host_id}/down", scenario.host_download_bps),
                    rack_up=up,
                    rack_down=down,
                    is_seed=is_seed,
                    upload_bps=scenario.host_upload_bps,
                    download_bps=scenario.host_download_bps,
                )
            )
        self.registry = Registry(
            network.link("registry/egress", scenario.registry_egress_bps),
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
