"""One cluster benchmark scenario on namespaces: the swarm benchmark's run, per-node rates.

:class:`ClusterRun` is :class:`bench.swarm_run.SwarmRun` (registry, image, scheduler,
seed, peers, pull clients, shaping checks, the p2p and direct rounds) with the network
of a :class:`bench.cluster_scenarios.ClusterScenario`: per-node rates, rack labels,
racks behind shaped uplinks. Each round also records the bytes that crossed each rack's
uplink and every node's completion time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.cluster_scenarios import ClusterScenario, direct_lower_bound
from bench.swarm_net import NamespaceNetwork, Node, NodeSpec, Rack
from bench.swarm_nodes import CLIENT_CONCURRENCY, Daemon, PullClient
from bench.swarm_run import SwarmRun

# Clients give up after this many times the direct pulls' lower bound, plus start-up.
TIMEOUT_BOUND_MULTIPLE = 3.0
TIMEOUT_SLACK_S = 120.0


class ClusterRun(SwarmRun):
    def __init__(
        self, scenario: ClusterScenario, network: NamespaceNetwork, work: Path, keep_work: bool
    ) -> None:
        # The settings SwarmRun reads besides the network: peer defaults, containerd's
        # fallback from the mirror to the registry.
        args = argparse.Namespace(
            peers=scenario.peers,
            image_mib=scenario.image_mib,
            no_fallback=False,
            keep_work=keep_work,
            min_piece_mib=None,
        )
        super().__init__(args, network, work)
        self.scenario = scenario

    def layout(self) -> tuple[list[NodeSpec], list[Rack]]:
        return self.scenario.node_specs(), self.scenario.rack_specs()

    def shaping_paths(self) -> list[tuple[str, Node, Node]]:
        """The swarm benchmark's two paths, and one between racks when there are racks."""
        paths = super().shaping_paths()
        first = self.nodes["peer00"]
        other = next((p for p in self.peers if p.rack != first.rack), None)
        if self.racks and other is not None:
            paths.append((f"peer00 -> {other.name} (across racks)", first, other))
        return paths

    def scheduling(self) -> dict[str, Any]:
        gateways = self.scenario.rack_gateways
        return {"rack_gateways": gateways} if gateways else {}

    def client_concurrency(self, node: Node) -> int:
        """The seed's client asks for every blob at once, as p2psim's seed starts them all."""
        if node.name == "seed" and self.image is not None:
            return len(self.image.blobs)
        return CLIENT_CONCURRENCY

    def _timeout_s(self) -> float:
        assert self.image is not None
        bound = direct_lower_bound(self.scenario, self.image.total_bytes)
        return TIMEOUT_BOUND_MULTIPLE * float(bound["seconds"]) + TIMEOUT_SLACK_S

    def _measure(
        self, mode: str, clients: list[PullClient], daemons: list[Daemon]
    ) -> dict[str, Any]:
        before = self.network.uplink_bytes()
        entry = super()._measure(mode, clients, daemons)
        after = self.network.uplink_bytes()
        entry["uplinks"] = {
            rack: {
                "up_bytes": up - before.get(rack, (0, 0))[0],
                "down_bytes": down - before.get(rack, (0, 0))[1],
            }
            for rack, (up, down) in after.items()
        }
        entry["completion_s_by_node"] = {
            result["node"]: result.get("completion_s") for result in entry["nodes"]
        }
        return entry
