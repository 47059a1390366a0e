"""The cluster benchmark's scenarios: which node sits where, at which rates; the bound.

Three networks, each with a registry, a scheduler, one seed and N peers (rates are
Mbit/s = 10^6 bit/s at the shaper, Ethernet frames included):

* ``homogeneous``: the swarm benchmark's network. Every peer and the seed 40 up and 80
  down, the registry 80 out, one flat bridge.
* ``mixed``: NICs of two speeds, the same rate both ways as real NICs have: half the
  peers (the even ones) at the fast speed (80), half at half of it (40); the seed fast.
  ``p2psim`` draws NIC speeds as one speed both ways, so this is what it can model.
* ``racks``: the homogeneous NICs, but the peers split into two racks and the seed in a
  rack of its own, each rack's bridge joined to the core bridge (registry, scheduler) by
  an uplink shaped both ways that carries one NIC's worth: 80 down and 40 up by default,
  ``hosts_per_rack x NIC / oversubscription`` in ``p2psim``'s terms (12:1 with 24 peers).
  A rack's peers can upload 12 times what leaves the rack, so the run shows whether the
  swarm keeps its traffic inside the racks; the seed's uplink is as fast as its NIC.

Peers are labelled with racks the way ``simulations.topology`` names them (``rack-0000``,
``rack-0001``, ``rack-seed``) in every scenario, so the scheduler sees the same labels in
the real run and in the simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import round_
from bench.swarm_net import NodeSpec, Rack, Shaping

SCENARIOS = ("homogeneous", "mixed", "racks")
MBIT = 1_000_000  # bits per second in one Mbit/s
SEED_RACK = "rack-seed"  # as simulations.topology.SEED_RACK
RACKS = 2  # peer racks in the racks scenario


@dataclass(frozen=True)
class ClusterScenario:
    """One benchmark network. Per-peer rates are in peer order (peer00 first)."""

    name: str
    description: str
    peers: int
    image_mib: int
    peer_up_mbps: tuple[float, ...]
    peer_down_mbps: tuple[float, ...]
    seed_up_mbps: float
    seed_down_mbps: float
    registry_egress_mbps: float
    # 0: one flat bridge. Otherwise the peers split into this many racks (consecutive
    # peers, like p2psim's node index // hosts_per_rack) and the seed sits in its own.
    racks: int = 0
    uplink_up_mbps: float = 0.0
    uplink_down_mbps: float = 0.0
    # The scheduler's scheduling.rack_gateways (0: its default, off).
    rack_gateways: int = 0
    # The nodes' TCP congestion control (None: the host's default).
    congestion_control: str | None = None

    @property
    def congestion_control_label(self) -> str:
        """The congestion control as the report names it."""
        return self.congestion_control or "the host's default"

    @property
    def hosts_per_rack(self) -> int:
        return math.ceil(self.peers / self.racks) if self.racks else self.peers

    def peer_name(self, index: int) -> str:
        return f"peer{index:02d}"

    def peer_rack(self, index: int) -> str:
        return f"rack-{index // self.hosts_per_rack:04d}"

    def node_specs(self) -> list[NodeSpec]:
        specs = [
            NodeSpec("registry", Shaping(up_bps=self.registry_egress_mbps * MBIT)),
            NodeSpec("scheduler", Shaping()),
            NodeSpec(
                "seed", Shaping(self.seed_up_mbps * MBIT, self.seed_down_mbps * MBIT), SEED_RACK
            ),
        ]
        for i in range(self.peers):
            shaping = Shaping(self.peer_up_mbps[i] * MBIT, self.peer_down_mbps[i] * MBIT)
            specs.append(NodeSpec(self.peer_name(i), shaping, self.peer_rack(i)))
        return specs

    def rack_specs(self) -> list[Rack]:
        """The shaped racks: none on a flat network; the peer racks and the seed's."""
        if not self.racks:
            return []
        uplink = Shaping(self.uplink_up_mbps * MBIT, self.uplink_down_mbps * MBIT)
        names = sorted({self.peer_rack(i) for i in range(self.peers)}) + [SEED_RACK]
        return [Rack(name, uplink) for name in names]

    def oversubscription(self) -> float | None:
        """``hosts_per_rack x mean NIC down / uplink down``, as p2psim defines it."""
        if not self.racks:
            return None
        mean_down = sum(self.peer_down_mbps) / self.peers
        return self.hosts_per_rack * mean_down / self.uplink_down_mbps

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "peers": self.peers,
            "image_mib": self.image_mib,
            "peer_up_mbps": list(self.peer_up_mbps),
            "peer_down_mbps": list(self.peer_down_mbps),
            "seed_up_mbps": self.seed_up_mbps,
            "seed_down_mbps": self.seed_down_mbps,
            "registry_egress_mbps": self.registry_egress_mbps,
            "racks": self.racks,
            "hosts_per_rack": self.hosts_per_rack,
            "uplink_up_mbps": self.uplink_up_mbps if self.racks else None,
            "uplink_down_mbps": self.uplink_down_mbps if self.racks else None,
            "oversubscription": round_(self.oversubscription(), 3),
            "peer_racks": [self.peer_rack(i) for i in range(self.peers)],
            "tcp_congestion_control": self.congestion_control_label,
        }


def build_scenario(
    name: str,
    peers: int,
    image_mib: int,
    peer_up_mbps: float = 40.0,
    peer_down_mbps: float = 80.0,
    registry_egress_mbps: float = 80.0,
    uplink_down_mbps: float = 80.0,
    rack_gateways: int = 0,
    congestion_control: str | None = None,
) -> ClusterScenario:
    """The scenario ``name`` at this size; the rates are the homogeneous ones."""

    def make(**rates: Any) -> ClusterScenario:
        return ClusterScenario(
            name=name,
            peers=peers,
            image_mib=image_mib,
            registry_egress_mbps=registry_egress_mbps,
            rack_gateways=rack_gateways,
            congestion_control=congestion_control,
            **rates,
        )

    if name == "homogeneous":
        return make(
            description="every peer and the seed at the same rates, one flat bridge",
            peer_up_mbps=(peer_up_mbps,) * peers,
            peer_down_mbps=(peer_down_mbps,) * peers,
            seed_up_mbps=peer_up_mbps,
            seed_down_mbps=peer_down_mbps,
        )
    if name == "mixed":
        fast, slow = peer_down_mbps, peer_down_mbps / 2
        nics = tuple(fast if i % 2 == 0 else slow for i in range(peers))
        return make(
            description=f"NICs of two speeds, the same both ways: the even peers {fast:g}, "
            f"the odd ones {slow:g}; the seed {fast:g}; one flat bridge",
            peer_up_mbps=nics,
            peer_down_mbps=nics,
            seed_up_mbps=fast,
            seed_down_mbps=fast,
        )
    if name == "racks":
        uplink_up = uplink_down_mbps * peer_up_mbps / peer_down_mbps
        return make(
            description=f"homogeneous NICs; the peers in {RACKS} racks and the seed in its "
            f"own, each rack behind an uplink of {uplink_up:g} up and {uplink_down_mbps:g} "
            "down to the core bridge (registry, scheduler)",
            peer_up_mbps=(peer_up_mbps,) * peers,
            peer_down_mbps=(peer_down_mbps,) * peers,
            seed_up_mbps=peer_up_mbps,
            seed_down_mbps=peer_down_mbps,
            racks=min(RACKS, peers),
            uplink_up_mbps=uplink_up,
            uplink_down_mbps=uplink_down_mbps,
        )
    raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")


# The fluid lower bound ------------------------------------------------------------------


def _bound(terms: dict[str, float]) -> dict[str, Any]:
    binding = max(terms, key=lambda k: terms[k])
    return {
        "seconds": round_(terms[binding]),
        "binding_term": binding,
        "terms_s": {k: round_(v) for k, v in terms.items()},
    }


def _racked(scn: ClusterScenario) -> dict[str, list[int]]:
    members: dict[str, list[int]] = {}
    for i in range(scn.peers):
        members.setdefault(scn.peer_rack(i), []).append(i)
    return members


def lower_bound(
    scn: ClusterScenario, image_bytes: int, payload_share: float = 1.0
) -> dict[str, Any]:
    """The fluid lower bound on the P2P makespan of this network (seconds).

    Kumar & Ross's three terms, with the seed an uploading helper and not a receiver:
    ``F/u_s`` (the registry sends every byte once), ``F/d_min`` (the slowest peer takes
    every byte in) and ``N*F/(u_s + u_seed + sum u_i)`` (N copies must be uploaded by
    someone). With racks the seed's upload counts at most at its rack's uplink, and
    every peer rack r adds two: ``F/D_r`` (every byte enters the rack over its downlink
    D_r at least once) and ``n_r*F/(sum_{i in r} u_i + D_r)`` (the rack's n_r copies
    come from its own members' uploads or over its downlink). Rates are the shapers';
    ``payload_share`` scales them all (TCP payload per frame). A bound, not always
    attainable: the seed must get the bytes before it can pass them on.
    """
    f = image_bytes
    rate = MBIT / 8 * payload_share
    u_s = scn.registry_egress_mbps * rate
    seed_up = scn.seed_up_mbps * rate
    if scn.racks:
        seed_up = min(seed_up, scn.uplink_up_mbps * rate)
    uploads = [u * rate for u in scn.peer_up_mbps]
    terms = {
        "registry": f / u_s,
        "slowest_download": f / (min(scn.peer_down_mbps) * rate),
        "swarm_upload": scn.peers * f / (u_s + seed_up + sum(uploads)),
    }
    if scn.racks:
        down = scn.uplink_down_mbps * rate
        for rack, members in _racked(scn).items():
            terms[f"{rack}_downlink"] = f / down
            terms[f"{rack}_inflow"] = len(members) * f / (sum(uploads[i] for i in members) + down)
    return _bound(terms)


def direct_lower_bound(
    scn: ClusterScenario, image_bytes: int, payload_share: float = 1.0
) -> dict[str, Any]:
    """Without P2P: ``max(N*F/u_s, F/d_min)``, and ``n_r*F/D_r`` per rack."""
    f = image_bytes
    rate = MBIT / 8 * payload_share
    terms = {
        "registry": scn.peers * f / (scn.registry_egress_mbps * rate),
        "slowest_download": f / (min(scn.peer_down_mbps) * rate),
    }
    if scn.racks:
        for rack, members in _racked(scn).items():
            terms[f"{rack}_downlink"] = len(members) * f / (scn.uplink_down_mbps * rate)
    return _bound(terms)


def registry_bounds_direct(bound: dict[str, Any]) -> bool:
    """Whether the registry's egress is (one of) what bounds the direct pulls."""
    terms: dict[str, float] = bound["terms_s"]
    return bool(terms["registry"] >= max(terms.values()) * 0.999)


def describe_rates(scn: ClusterScenario) -> str:
    """A one-line summary of the rates, for the printed table."""

    def spread(values: Sequence[float]) -> str:
        low, high = min(values), max(values)
        return f"{low:g}" if low == high else f"{low:g}-{high:g}"

    text = (
        f"peers up {spread(scn.peer_up_mbps)} / down {spread(scn.peer_down_mbps)}, seed up "
        f"{scn.seed_up_mbps:g} / down {scn.seed_down_mbps:g}, registry egress "
        f"{scn.registry_egress_mbps:g}"
    )
    if scn.racks:
        text += (
            f", {scn.racks} racks of {scn.hosts_per_rack} + a seed rack, uplinks "
            f"{scn.uplink_up_mbps:g} up / {scn.uplink_down_mbps:g} down"
        )
    return text + f" (Mbit/s); TCP congestion control {scn.congestion_control_label}"
