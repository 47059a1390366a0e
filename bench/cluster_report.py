"""The cluster benchmark's report: figures per mode, the bound, p2psim's gap, the targets.

Builds the JSON of one scenario from what :class:`bench.cluster_run.ClusterRun`
measured and :func:`bench.cluster_sim.predict` simulated, and the table printed after a
run. The medians and link use come from :mod:`bench.swarm_report`, so the two benchmarks
count the same way.
"""

from __future__ import annotations

import os
from typing import Any

from bench.cluster_scenarios import (
    ClusterScenario,
    describe_rates,
    direct_lower_bound,
    lower_bound,
    registry_bounds_direct,
)
from bench.cluster_sim import gap
from bench.report import round_
from bench.swarm_report import TCP_PAYLOAD_SHARE, figures_for
from bench.swarm_report import target_checks as swarm_target_checks

TARGET_SPEEDUP = 5.0  # direct makespan / P2P makespan, when the registry bounds direct
TARGET_SIM_GAP = 0.25  # |p2psim - measured| / measured
# A 1-second CPU sample at least this busy counts as saturated...
SATURATED_SAMPLE = 0.9
# ...and when more than this share of the P2P round's samples are, the CPUs (not the
# shapers) may have set the pace, and the report says so.
SATURATED_SHARE_LIMIT = 0.1


def cpu_headroom(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """How busy the two CPUs were during the pulls: can they carry this many nodes?"""
    out: dict[str, Any] = {
        "saturated_sample": SATURATED_SAMPLE,
        "saturated_share_limit": SATURATED_SHARE_LIMIT,
    }
    for mode, results in rounds.items():
        if not results:
            continue
        cpu = results[0]["cpu"]
        samples = cpu.get("host_cpu_busy_samples", [])
        saturated = sum(1 for s in samples if s >= SATURATED_SAMPLE)
        own_s = cpu.get("benchmark_processes_cpu_s")
        capacity_s = cpu["window_s"] * (os.cpu_count() or 1)
        out[mode] = {
            "host_cpu_busy_mean": cpu["host_cpu_busy"],
            "host_cpu_busy_max_sample": max(samples) if samples else None,
            "samples": len(samples),
            "saturated_samples": saturated,
            "saturated_share": round_(saturated / len(samples), 3) if samples else None,
            "benchmark_processes_cpu_s": own_s,
            # What the benchmark's own processes (registry, scheduler, peers, clients)
            # took of the machine, and what everything else (other sessions, the kernel's
            # shaping and softirqs) took.
            "own_share_of_cpus": round_(own_s / capacity_s, 3) if own_s is not None else None,
            "other_share_of_cpus": round_(cpu["host_cpu_busy"] - own_s / capacity_s, 3)
            if own_s is not None
            else None,
            "cpu_s_by_process": cpu.get("process_cpu_s"),
        }
    p2p = out.get("p2p")
    if p2p and p2p["saturated_share"] is not None:
        cpu_limited = p2p["saturated_share"] > SATURATED_SHARE_LIMIT
        out["cpu_may_have_set_the_pace"] = cpu_limited
        out["verdict"] = (
            f"{p2p['saturated_share']:.0%} of the P2P round's 1-s samples had the CPUs at "
            f">= {SATURATED_SAMPLE:.0%} (mean {p2p['host_cpu_busy_mean']:.0%}, the "
            f"benchmark's own processes {_percent(p2p['own_share_of_cpus'])}): "
            + (
                "the CPUs, not only the shapers, may have limited the run"
                if cpu_limited
                else "the shapers, not the CPUs, set the pace"
            )
        )
    return out


def _sim_block(
    sim: dict[str, Any], figures: dict[str, dict[str, Any]], seeds: list[int]
) -> dict[str, Any]:
    block: dict[str, Any] = {"seeds": seeds, **sim}
    strategies = sim.get("strategies", {})
    measured = {mode: (figures.get(mode) or {}).get("makespan_s") for mode in ("p2p", "direct")}
    block["gap"] = {
        "definition": "(p2psim makespan - measured makespan) / measured; below 0 the "
        "simulator is optimistic",
        "p2p": gap(measured["p2p"], (strategies.get("rule") or {}).get("makespan_s_median")),
        "direct": gap(
            measured["direct"], (strategies.get("direct") or {}).get("makespan_s_median")
        ),
    }
    for mode, strategy in (("p2p", "rule"), ("direct", "direct")):
        runs = (strategies.get(strategy) or {}).get("runs", [])
        gaps = [gap(measured[mode], r["makespan_s"]) for r in runs]
        block["gap"][f"{mode}_per_seed"] = gaps
    return block


def target_checks(
    figures: dict[str, dict[str, Any]],
    direct_bound: dict[str, Any],
    sim_gap: dict[str, Any],
    peers: int,
) -> dict[str, Any]:
    """Issue 8's targets, each with what was measured and whether it is met."""
    p2p, direct = figures.get("p2p") or {}, figures.get("direct") or {}
    speedup = (
        round_(direct["makespan_s"] / p2p["makespan_s"], 3)
        if p2p.get("makespan_s") and direct.get("makespan_s")
        else None
    )
    registry_binds = registry_bounds_direct(direct_bound)
    sim = sim_gap.get("p2p")
    # The swarm benchmark's two (bound ratio, registry bytes), then issue 8's two.
    checks: dict[str, dict[str, Any]] = swarm_target_checks(figures, shaped=True)
    checks |= {
        "p2p_speedup_over_direct": {
            "target": f">= {TARGET_SPEEDUP} (N=24, registry egress bounding direct pulls)",
            "measured": speedup,
            "evaluated": registry_binds and peers == 24 and speedup is not None,
            "met": speedup is not None and speedup >= TARGET_SPEEDUP,
        },
        "p2psim_gap_p2p": {
            "target": f"|gap| <= {TARGET_SIM_GAP}",
            "measured": sim,
            "met": sim is not None and abs(sim) <= TARGET_SIM_GAP,
        },
    }
    if not checks["p2p_speedup_over_direct"]["evaluated"]:
        checks["p2p_speedup_over_direct"]["met"] = None
    return checks


def build_report(
    scn: ClusterScenario,
    image: dict[str, Any],
    rounds: dict[str, list[dict[str, Any]]],
    sim: dict[str, Any],
    sim_seeds: list[int],
) -> dict[str, Any]:
    """Everything measured and derived for one scenario (the caller adds the run facts)."""
    image_bytes = image["total_bytes"]
    bound = lower_bound(scn, image_bytes)
    direct_bound = direct_lower_bound(scn, image_bytes)
    figures = {
        mode: figures_for(results, bound["seconds"], direct_bound["seconds"])
        for mode, results in rounds.items()
        if results
    }
    for mode, results in rounds.items():
        if results:
            figures[mode]["completion_s_by_node"] = results[0].get("completion_s_by_node", {})
            if results[0].get("uplinks"):
                figures[mode]["uplink_bytes"] = results[0]["uplinks"]
    sim_block = _sim_block(sim, figures, sim_seeds)
    return {
        "benchmark": "cluster",
        "scenario": scn.name,
        "parameters": scn.to_json(),
        "image": image,
        "lower_bound": {
            **bound,
            "formula": "max(F/u_s, F/d_min, N*F/(u_s + u_seed + sum u_i)); with racks also, "
            "per peer rack r, F/D_r and n_r*F/(sum_{i in r} u_i + D_r), and u_seed at most "
            "its rack's uplink",
            "rates": "the configured shaper rates (Ethernet frames)",
            "tcp_payload_bound_s": lower_bound(scn, image_bytes, TCP_PAYLOAD_SHARE)["seconds"],
            "tcp_payload_note": f"the same with every rate times {TCP_PAYLOAD_SHARE:.4f} "
            "(TCP payload per 1514-byte frame): what a TCP transfer can attain at best",
        },
        "direct_lower_bound": {
            **direct_bound,
            "formula": "max(N*F/u_s, F/d_min); with racks also n_r*F/D_r per rack",
            "registry_is_the_bottleneck": registry_bounds_direct(direct_bound),
        },
        "figures": figures,
        "p2psim": sim_block,
        "targets": target_checks(figures, direct_bound, sim_block["gap"], scn.peers),
        "cpu_headroom": cpu_headroom(rounds),
        "units": {
            "mbps": "10^6 bits per second at the shaper (Ethernet frames, headers included)",
            "seconds": "wall clock from the go signal sent to every client at once",
            "makespan_s": "until the last of the N normal peers has every blob, verified",
            "completion_s_by_node": "each node's client: go signal to its last verified "
            "blob (the seed's too in p2p mode; the figures leave it out)",
            "registry_blob_bytes": "body bytes of blob GETs (200/206) in the registry's "
            "access log; registry_tx_bytes: everything its interface sent",
            "p2p_share": "share of the normal peers' downloaded bytes that came from other "
            "peers or the seed (p2p_peer_download_bytes_total by source)",
            "uplink_bytes": "bytes through each rack's uplink (frames), up = rack to core",
            "host_cpu_busy": "share of all CPUs busy during the pulls (0..1)",
        },
        "samples": rounds,
    }


# The table ------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"


def render_summary(report: dict[str, Any], scn: ClusterScenario) -> str:
    bound = report["lower_bound"]
    figures = report["figures"]
    sim = report["p2psim"]
    strategies = sim.get("strategies", {})
    lines = [
        f"Cluster benchmark, scenario {scn.name}: {scn.peers} peers + 1 seed pull one "
        f"{report['image']['total']} image at once ({scn.description}).",
        f"Rates: {describe_rates(scn)}.",
        f"Lower bound {bound['seconds']:.1f} s ({bound['binding_term']}); direct pulls' "
        f"bound {report['direct_lower_bound']['seconds']:.1f} s "
        f"({report['direct_lower_bound']['binding_term']}).",
        "",
        f"{'mode':<7} {'makespan s':>10} {'p50 s':>7} {'x bound':>7} {'registry xF':>11} "
        f"{'P2P share':>9} {'CPU busy':>8} {'p2psim s':>9} {'gap':>6} {'ok':>3}",
    ]
    for mode, strategy in (("p2p", "rule"), ("direct", "direct")):
        fig = figures.get(mode)
        if not fig:
            continue
        predicted = (strategies.get(strategy) or {}).get("makespan_s_median")
        lines.append(
            f"{mode:<7} {_fmt(fig['makespan_s'], '.1f'):>10} "
            f"{_fmt(fig['completion_p50_s'], '.1f'):>7} "
            f"{_fmt(fig['makespan_over_bound'], '.2f'):>7} "
            f"{_fmt(fig['registry_blob_bytes_over_image'], '.2f'):>11} "
            f"{_percent(fig['p2p_share']):>9} {_percent(fig['host_cpu_busy']):>8} "
            f"{_fmt(predicted, '.1f'):>9} {_percent(sim['gap'].get(mode)):>6} "
            f"{'yes' if fig['all_ok'] else 'NO':>3}"
        )
    if sim.get("error"):
        lines.append(f"p2psim FAILED: {sim['error']}")
    for mode in ("p2p", "direct"):
        uplinks = (figures.get(mode) or {}).get("uplink_bytes")
        if uplinks:
            image_bytes = report["image"]["total_bytes"]
            lines.append(
                f"{mode} bytes over the rack uplinks (x image, up/down): "
                + ", ".join(
                    f"{rack} {u['up_bytes'] / image_bytes:.2f}/{u['down_bytes'] / image_bytes:.2f}"
                    for rack, u in uplinks.items()
                )
            )
    headroom = report["cpu_headroom"]
    if headroom.get("verdict"):
        lines.append(f"CPU: {headroom['verdict']}.")
    lines.append("")
    for name, check in report["targets"].items():
        if check.get("met") is None:
            verdict = "not evaluated"
        else:
            verdict = "met" if check["met"] else "NOT met"
        lines.append(
            f"Target {name}: {verdict} (target {check['target']}, measured {check['measured']})"
        )
    for warning in report.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)
