"""One simulation's parameters: a frozen dataclass, loadable from YAML, overridable.

Units are in the names. Defaults describe the question issue 4 asks: 1000 nodes with
10 Gbps NICs pulling a 1 GiB image at once, 40 hosts per rack with 3:1 uplink
oversubscription, a registry with 10 Gbps egress.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from peer.conductor import MAX_PER_PARENT
from peer.config import PeerConfig
from scheduler.core.settings import SchedulerSettings

GBPS = 1e9 / 8  # bytes per second in one gigabit per second
MiB = 1024 * 1024
# Parent selection. Every P2P strategy runs scheduler.core's pipeline with its own
# evaluator (simulations.evaluators); the oracle's scores come from the simulator's
# truth, which no real scheduler sees. "direct": every node pulls from the registry.
# "learned": the learned evaluator with the model at model_path (default: the one shipped).
# "tuned": the rule evaluator with the weights in rule_weights (default: the ones
# ``p2psim tune`` found, simulations/tuned_rule_weights.json).
STRATEGIES = ("rule", "random", "kraken", "oracle", "direct", "learned", "tuned")
# A 1 GiB image in manifest order: base OS, language runtime, dependencies, application,
# assets, configuration. Sizes in MiB; they sum to 1024.
DEFAULT_LAYERS_MIB = (28.0, 150.0, 480.0, 300.0, 64.0, 2.0)


class ScenarioError(ValueError):
    """A scenario file or override names an unknown key or holds a bad value."""


@dataclass(frozen=True)
class Scenario:
    name: str = "default"
    nodes: int = 1000
    seed: int = 0
    strategy: str = "rule"
    # The learned strategy's model file (p2pctl model train); empty: the shipped model.
    model_path: str = ""
    # The tuned strategy's weights file (p2psim tune); empty: the committed one.
    rule_weights: str = ""
    # Network.
    host_upload_bps: float = 10 * GBPS
    host_download_bps: float = 10 * GBPS
    hosts_per_rack: int = 40
    # Rack uplink = hosts_per_rack x host NIC / oversubscription, each way.
    oversubscription: float = 3.0
    registry_egress_bps: float = 10 * GBPS
    # Piece transfers the registry serves at once; more wait in line (FIFO).
    registry_max_transfers: int = 256
    sharing: str = "fast"  # "fast" bottleneck rule or "exact" max-min (small clusters)
    # Fast rule: a link's flows keep their rates while its share rose by at most this
    # fraction (see simulations.network.Network); 0 re-rates on every change.
    rise_tolerance: float = 0.05
    # Latencies: one scheduler request (register / ask again), one piece request.
    schedule_latency_s: float = 0.002
    request_latency_s: float = 0.001
    # Peers: the real peer's defaults, read from where they are set, so a changed default
    # is simulated without a second edit. upload_slots 0: each host's from its announced
    # upload rate (peer.upload_slots).
    upload_slots: int = PeerConfig.upload_slots
    pieces_in_flight: int = PeerConfig.pieces_in_flight
    max_per_parent: int = MAX_PER_PARENT
    origin_concurrency: int = PeerConfig.origin_concurrency
    announce_interval_s: float = PeerConfig.announce_interval_s
    # Scheduler: rack gateways per task and rack (0 off), the ratio past which a
    # congested rack keeps its peers' parents inside (0 off) and the most stripes a
    # rack's peers split other racks' pieces into (0 off), and how long a rack peer's
    # claim on a piece it fetches from another rack lasts (0: no claims), and how many
    # times the import took a released claim is kept (0: not kept), and how many
    # rack-mates holding claimed pieces one claim may link as parents (0: none), and how
    # many normal peers per rack and task take a share of the origin fetch (0: none);
    # SchedulerSettings' defaults.
    rack_gateways: int = SchedulerSettings.rack_gateways
    rack_congestion_ratio: float = SchedulerSettings.rack_congestion_ratio
    rack_stripes: int = SchedulerSettings.rack_stripes
    rack_claim_lease_s: float = SchedulerSettings.rack_claim_lease_s
    rack_claim_hold_factor: float = SchedulerSettings.rack_claim_hold_factor
    rack_holders_per_claim: int = SchedulerSettings.rack_holders_per_claim
    origin_sharers_per_rack: int = SchedulerSettings.origin_sharers_per_rack
    # Layers a node pulls at once (containerd's max_concurrent_downloads is 3).
    layer_concurrency: int = 3
    seed_peers: int = 0
    # Heterogeneous NICs: (Gbps, share) pairs; each node gets one NIC speed, up and down,
    # in these proportions (shuffled by the seed). Empty: every node has host_*_bps.
    nic_mix_gbps: tuple[tuple[float, float], ...] = ()
    # Stragglers: this share of nodes moves bytes at straggler_factor x its NIC speed
    # while announcing the full speed (a bad cable, a busy disk): the scheduler can only
    # learn it from piece costs.
    straggler_fraction: float = 0.0
    straggler_factor: float = 0.1
    # Churn: this share of nodes fails once, at arrival + a uniform time in
    # [churn_from_s, churn_until_s]: its peers vanish with their pieces, transfers from
    # and to it break, and the scheduler is told the host expired. A node that fails
    # before it has the image never gets it; completion figures cover the others.
    churn_fraction: float = 0.0
    churn_from_s: float = 0.5
    churn_until_s: float = 3.0
    # Workload.
    layers_mib: tuple[float, ...] = field(default=DEFAULT_LAYERS_MIB)
    # Nodes arrive uniformly at random in [0, arrival_spread_s]; 0: all at once.
    arrival_spread_s: float = 0.0
    # Give up (and report the run incomplete) past this much simulated time.
    max_sim_time_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ScenarioError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.sharing not in ("fast", "exact"):
            raise ScenarioError(f"sharing must be 'fast' or 'exact', got {self.sharing!r}")
        for name in (
            "nodes",
            "hosts_per_rack",
            "registry_max_transfers",
            "pieces_in_flight",
            "max_per_parent",
            "origin_concurrency",
            "layer_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ScenarioError(f"{name} must be >= 1")
        if self.upload_slots < 0:
            raise ScenarioError("upload_slots must be >= 0 (0: from each host's upload rate)")
        for name in (
            "host_upload_bps",
            "host_download_bps",
            "oversubscription",
            "registry_egress_bps",
            "announce_interval_s",
            "max_sim_time_s",
            "straggler_factor",
        ):
            if not getattr(self, name) > 0:
                raise ScenarioError(f"{name} must be > 0")
        for name in (
            "schedule_latency_s",
            "request_latency_s",
            "arrival_spread_s",
            "seed_peers",
            "rise_tolerance",
            "churn_from_s",
            "rack_claim_hold_factor",
        ):
            if not getattr(self, name) >= 0:
                raise ScenarioError(f"{name} must be >= 0")
        for name in ("straggler_fraction", "churn_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ScenarioError(f"{name} must be in [0, 1]")
        if not (self.rack_congestion_ratio == 0 or self.rack_congestion_ratio >= 1):
            raise ScenarioError("rack_congestion_ratio must be 0 (off) or >= 1")
        if not self.churn_until_s >= self.churn_from_s:
            raise ScenarioError("churn_until_s must be >= churn_from_s")
        if any(not (gbps > 0 and share > 0) for gbps, share in self.nic_mix_gbps):
            raise ScenarioError("nic_mix_gbps: every speed and share must be > 0")
        if not self.layers_mib or any(not size > 0 for size in self.layers_mib):
            raise ScenarioError("layers_mib must list at least one positive size")

    @property
    def layer_bytes(self) -> tuple[int, ...]:
        return tuple(int(size * MiB) for size in self.layers_mib)

    @property
    def image_bytes(self) -> int:
        return sum(self.layer_bytes)

    def nic_speeds_bps(self) -> tuple[tuple[float, float], ...]:
        """(bytes/s, share) pairs of the NIC mix, shares summing to 1; empty if none."""
        total = sum(share for _, share in self.nic_mix_gbps)
        return tuple((gbps * GBPS, share / total) for gbps, share in self.nic_mix_gbps)

    def replace(self, **changes: Any) -> Scenario:
        """A copy with ``changes`` applied; unknown keys are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ScenarioError(f"unknown scenario keys: {', '.join(unknown)}")
        kinds = {f.name: f.type for f in fields(self)}
        coerced = {name: _coerce(name, kinds[name], value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)


def _coerce(name: str, kind: object, value: Any) -> Any:
    """YAML and the command line give strings and ints where floats are meant."""
    try:
        if kind == "float" and not isinstance(value, bool):
            return float(value)
        if kind == "int" and not isinstance(value, bool) and float(value) == int(value):
            return int(value)
        if kind == "str" and isinstance(value, str):
            return value
        if kind == "tuple[float, ...]" and isinstance(value, list | tuple):
            return tuple(float(v) for v in value)
        if kind == "tuple[tuple[float, float], ...]":
            return _pairs(value)
    except (TypeError, ValueError):
        pass
    raise ScenarioError(f"{name}: {value!r} is not a {kind}")


def _pairs(value: Any) -> tuple[tuple[float, float], ...]:
    """``{10: 0.6, 25: 0.4}`` (YAML), ``[[10, 0.6], ...]`` or ``"10:0.6,25:0.4"`` (CLI)."""
    if isinstance(value, str):
        value = [item.split(":") for item in value.split(",") if item.strip()]
    elif isinstance(value, dict):
        value = list(value.items())
    pairs = []
    for item in value:
        key, share = item  # a wrong shape raises ValueError or TypeError
        pairs.append((float(key), float(share)))
    return tuple(pairs)


def load_scenario(path: str | Path) -> Scenario:
    """Read a YAML mapping of scenario keys; missing keys keep their defaults."""
    data = yaml.safe_load(Path(path).read_text())
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping of scenario keys")
    data.setdefault("name", Path(path).stem)
    return Scenario().replace(**data)
