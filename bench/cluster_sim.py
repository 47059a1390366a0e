"""``p2psim``'s prediction for a cluster benchmark network, run in this process.

:func:`sim_scenario` maps a :class:`bench.cluster_scenarios.ClusterScenario` and the
pushed image onto a :class:`simulations.scenario.Scenario`; :func:`predict` runs it
through ``simulations.report.simulate`` (what the ``p2psim`` command runs) for the
``rule`` strategy (the real scheduler's evaluator) and for ``direct`` pulls, over a few
seeds. The mapping:

* N, the blob sizes in pull order (the config, then the layers), the per-node rates
  and the registry egress are the benchmark's. Rates are multiplied by the TCP payload
  share of a frame (1448/1514): the shapers count Ethernet frames, the simulator moves
  payload bytes.
* The seed is ``seed_peers=1`` for P2P and absent for direct pulls (the benchmark's
  direct round has only the N peers pull). Like the simulator's seed, the benchmark's
  seed client asks for every blob at once.
* A flat network is one rack of N hosts with uplinks 1000 times the rack's NICs, so
  they never bind; the mixed NICs are ``nic_mix_gbps`` (one speed both ways, half and
  half: the simulator shuffles which node gets which, which on one flat rack changes
  nothing). Racks are ``hosts_per_rack`` and the ``oversubscription`` that gives the
  benchmark's uplink rates; the simulator's seed rack gets the same uplink, as the
  benchmark's does.
* The peers' settings (upload slots, pieces in flight, per-parent limit, origin
  concurrency, announce interval) are the peer's defaults, which the benchmark runs;
  ``layer_concurrency`` is the benchmark client's.

Not modelled by the simulator: HTTP and Python costs (CPU), the scheduler's real
request latency (it takes 2 ms per scheduler request and 1 ms per piece request), the
registry's manifest requests, and the mirror's own streaming to its client.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from bench.cluster_scenarios import MBIT, ClusterScenario
from bench.report import round_
from bench.swarm_nodes import CLIENT_CONCURRENCY
from bench.swarm_report import TCP_PAYLOAD_SHARE

# A flat network's rack uplinks carry this many times the rack's NICs: never a limit.
FLAT_OVERSUBSCRIPTION = 0.001
# The simulator's bandwidth sharing: exact max-min fairness, affordable at this size.
SHARING = "exact"
MiB = 1024 * 1024


def sim_scenario(scn: ClusterScenario, blob_bytes: Sequence[int], strategy: str, seed: int) -> Any:
    """The ``simulations.scenario.Scenario`` of this network, image and strategy."""
    from peer.conductor import MAX_PER_PARENT
    from peer.config import PeerConfig
    from simulations.scenario import Scenario

    peer = PeerConfig()
    rate = MBIT / 8 * TCP_PAYLOAD_SHARE  # bytes/s of payload per Mbit/s at the shaper
    changes: dict[str, Any] = {
        "name": f"bench-{scn.name}",
        "nodes": scn.peers,
        "seed": seed,
        "strategy": strategy,
        "seed_peers": 0 if strategy == "direct" else 1,
        # The seed's rates; the peers' too unless a NIC mix is given below.
        "host_upload_bps": scn.seed_up_mbps * rate,
        "host_download_bps": scn.seed_down_mbps * rate,
        "registry_egress_bps": scn.registry_egress_mbps * rate,
        "hosts_per_rack": scn.hosts_per_rack,
        "oversubscription": scn.oversubscription() or FLAT_OVERSUBSCRIPTION,
        "sharing": SHARING,
        "upload_slots": peer.upload_slots,
        "pieces_in_flight": peer.pieces_in_flight,
        "max_per_parent": MAX_PER_PARENT,
        "origin_concurrency": peer.origin_concurrency,
        "announce_interval_s": peer.announce_interval_s,
        "layer_concurrency": CLIENT_CONCURRENCY,
        "layers_mib": tuple(size / MiB for size in blob_bytes),
        "rack_gateways": scn.rack_gateways,
    }
    up, down = scn.peer_up_mbps, scn.peer_down_mbps
    if len(set(up)) > 1 or len(set(down)) > 1:
        if up != down:
            raise ValueError(
                f"{scn.name}: p2psim's NIC mix gives each node one speed both ways; these "
                "peers' upload and download rates differ"
            )
        speeds = sorted(set(up), reverse=True)
        changes["nic_mix_gbps"] = tuple(
            (mbps * TCP_PAYLOAD_SHARE / 1000, up.count(mbps) / len(up)) for mbps in speeds
        )
    elif (up[0], down[0]) != (scn.seed_up_mbps, scn.seed_down_mbps):
        raise ValueError(f"{scn.name}: p2psim gives the seed the peers' rates")
    return Scenario().replace(**changes)


def _run_json(result: Any) -> dict[str, Any]:
    return {
        "seed": result.seed,
        "complete": result.complete,
        "makespan_s": round_(float(result.makespan_s)),
        "completion_p50_s": round_(float(result.completion_p50_s)),
        "completion_p95_s": round_(float(result.completion_p95_s)),
        "registry_bytes_over_image": round_(float(result.registry_images), 3),
        "p2p_bytes": result.p2p_bytes,
        "cross_rack_bytes": result.cross_rack_bytes,
        "sim_lower_bound_s": round_(float(result.lower_bound_s)),
        "decisions": result.decisions,
        "completion_times_s": [round_(float(t)) for t in sorted(result.completion_times_s)],
    }


def predict(
    scn: ClusterScenario, blob_bytes: Sequence[int], seeds: Sequence[int]
) -> dict[str, Any]:
    """p2psim's runs for ``rule`` and ``direct``, one per seed, and their medians.

    Never raises: the simulator changes under other hands, and a failure to simulate
    must not lose the measurements, so it is recorded as ``error`` instead.
    """
    out: dict[str, Any] = {"strategies": {}}
    try:
        from simulations.report import simulate

        for strategy in ("rule", "direct"):
            runs = []
            for seed in seeds:
                scenario = sim_scenario(scn, blob_bytes, strategy, seed)
                runs.append(_run_json(simulate(scenario)))
            makespans = [r["makespan_s"] for r in runs]
            out["strategies"][strategy] = {
                "scenario": _scenario_json(sim_scenario(scn, blob_bytes, strategy, seeds[0])),
                "makespan_s_median": round_(statistics.median(makespans)),
                "makespan_s_min": min(makespans),
                "makespan_s_max": max(makespans),
                "all_complete": all(r["complete"] for r in runs),
                "runs": runs,
            }
    except Exception as exc:  # recorded in the report, never lost
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _scenario_json(scenario: Any) -> dict[str, Any]:
    data = dataclasses.asdict(scenario)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def gap(measured_s: float | None, predicted_s: float | None) -> float | None:
    """``(predicted - measured) / measured``: below 0 the simulator is optimistic."""
    if not measured_s or predicted_s is None:
        return None
    return round((predicted_s - measured_s) / measured_s, 3)
