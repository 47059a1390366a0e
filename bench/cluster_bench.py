"""The cluster benchmark: real Starling processes on an emulated network, and p2psim's guess.

Run as ``python -m bench.cluster_bench`` (root: it makes network namespaces; ``make
bench-cluster`` runs every scenario). For each scenario of
:mod:`bench.cluster_scenarios` (homogeneous, mixed NIC speeds, two racks behind shaped
uplinks) a real registry, one ``p2p-scheduler``, one seed ``p2p-peer`` and N
``p2p-peer`` processes run in network namespaces of their own, every node's upload and
download, the registry's egress and the rack uplinks shaped by ``tc tbf``
(:mod:`bench.swarm_net`). Every node pulls one generated 5-layer image at once through
its own mirror, checking every digest; then the same N nodes pull it straight from the
registry on the same network (:mod:`bench.cluster_run`). Then ``p2psim`` simulates the
same network and image in-process (:mod:`bench.cluster_sim`).

Per scenario, ``bench/results/cluster-<scenario>.json`` holds the command, the machine,
the commit, the parameters, every node's completion time, the makespan, the registry's
blob bytes, the P2P share, the fluid lower bound and the makespan over it, p2psim's
prediction and its gap, the CPU use, and the samples; ``cluster-<scenario>.png`` plots
measured P2P and direct pulls against p2psim. Namespaces are always torn down, on
failure too; a crashed run's leftovers are removed by the next one.

Default N is 24: the swarm of 24 peers, a seed, a scheduler and a registry fits the two
CPUs at these rates (the JSON's ``cpu_headroom`` shows how busy they were; see
bench/results/README.md).

The nodes run Linux's default TCP congestion control, cubic
(``--tcp-congestion-control``; ``host`` keeps this machine's own default), rather than
inheriting this machine's: its BBR overruns the shapers' 50 ms queues, which then drop a
large share of the peers' upload packets (bench/results/README.md has a pair of runs),
where a real NIC pushes back on its own host instead of dropping. The JSON records the
choice, and each round's share of upload packets the shapers dropped.

Frames stay at Ethernet's 1500 bytes. Jumbo frames (9000) were tried: a P2P round took
less CPU time, but most direct pulls through the registry's 80 Mbit/s shaper stalled for
minutes (at these scaled-down rates a flow of jumbo frames has a couple of packets in
flight, too few for fast retransmit: losses wait for timeouts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cluster_plot import plot_cluster
from bench.cluster_report import build_report, render_summary
from bench.cluster_run import ClusterRun
from bench.cluster_scenarios import MBIT, SCENARIOS, ClusterScenario, build_scenario
from bench.cluster_sim import predict
from bench.probes import host_busy_over, load_average, wait_for_quiet
from bench.report import code_state, machine_facts, round_
from bench.runner import (
    LOCK_PATH,
    add_network_flags,
    add_work_flags,
    hold_bench_lock,
    new_work_dir,
    raise_on_sigterm,
)
from bench.swarm_bench import QUIET_BUSY_SHARE, first_line
from bench.swarm_net import (
    NamespaceNetwork,
    NetworkError,
    leftover_namespaces,
    netns_unavailable_reason,
    remove_namespaces,
)
from bench.swarm_nodes import CLIENT_CONCURRENCY
from bench.swarm_run import SEED, progress
from peer.conductor import MAX_PER_PARENT
from peer.sizes import format_size
from peer.upload_slots import upload_slots_for
from tests.support.processes import ProcessFailed, log_tail
from tests.support.registry import registry_unavailable_reason

DEFAULT_PEERS = 24
DEFAULT_CONGESTION_CONTROL = "cubic"
DEFAULT_OUT_DIR = "bench/results"
# The code whose behaviour the figures show: the daemons, the simulator and this bench.
MEASURED_CODE = ("peer", "registry_proxy", "scheduler", "simulations", "bench")
TOP_PROCESSES = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster_bench",
        description="N peers pull one image at once through Starling and straight from the "
        "registry on an emulated network (namespaces, tc tbf), per scenario, against the "
        "fluid lower bound and p2psim's prediction. Needs root.",
    )
    parser.add_argument(
        "--scenario",
        choices=(*SCENARIOS, "all"),
        default="all",
        help="which network (default: all, one after the other)",
    )
    add_network_flags(parser, peers=DEFAULT_PEERS)
    parser.add_argument(
        "--uplink-down-mbps",
        type=float,
        default=80.0,
        help="racks: each rack's downlink (default 80); its uplink is this x up/down",
    )
    parser.add_argument(
        "--rack-gateways",
        type=int,
        default=0,
        help="the scheduler's scheduling.rack_gateways, also given to p2psim (default 0, off)",
    )
    parser.add_argument(
        "--tcp-congestion-control",
        default=DEFAULT_CONGESTION_CONTROL,
        help=f"the nodes' TCP congestion control (default {DEFAULT_CONGESTION_CONTROL}, "
        "Linux's own; 'host': this machine's default)",
    )
    parser.add_argument(
        "--sim-seeds", type=int, default=5, help="p2psim runs per strategy (default 5)"
    )
    parser.add_argument("--skip-direct", action="store_true", help="only the P2P round")
    parser.add_argument(
        "--out-dir", default=DEFAULT_OUT_DIR, help=f"JSON and PNG go here ({DEFAULT_OUT_DIR})"
    )
    parser.add_argument(
        "--suffix",
        default="",
        help="added to the file names: cluster-<scenario><suffix>.json (control runs)",
    )
    add_work_flags(parser, quiet_wait_s=1200.0)  # waited for before each scenario
    return parser


def unavailable_reason() -> str | None:
    """Why the benchmark cannot run here (not root, no iproute2/tc, no registry), or None."""
    if os.geteuid() != 0:
        return "not root: the cluster benchmark creates network namespaces"
    return netns_unavailable_reason() or registry_unavailable_reason()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.peers < 2 or args.image_mib < 1 or args.sim_seeds < 1 or args.rack_gateways < 0:
        print(
            "--peers must be at least 2, --image-mib and --sim-seeds at least 1, "
            "--rack-gateways at least 0",
            file=sys.stderr,
        )
        return 2
    if reason := unavailable_reason():
        print(f"cannot run the cluster benchmark: {reason}", file=sys.stderr)
        return 2
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    scenarios = [
        build_scenario(
            name,
            args.peers,
            args.image_mib,
            args.peer_up_mbps,
            args.peer_down_mbps,
            args.registry_egress_mbps,
            args.uplink_down_mbps,
            args.rack_gateways,
            None if args.tcp_congestion_control == "host" else args.tcp_congestion_control,
        )
        for name in names
    ]
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    lock = hold_bench_lock()  # one namespace benchmark at a time
    if lock is None:
        print(f"another swarm or cluster benchmark holds {LOCK_PATH}", file=sys.stderr)
        return 2
    cleanup_notes = remove_namespaces(leftover_namespaces())
    for note in cleanup_notes:
        progress(f"cleanup of an earlier run: {note}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    for scn in scenarios:
        report = run_scenario(scn, args)
        report["cleanup_notes_before"] = cleanup_notes
        out = out_dir / f"cluster-{scn.name}{args.suffix}.json"
        png = out_dir / f"cluster-{scn.name}{args.suffix}.png"
        if report["image"]["total_bytes"]:
            plot_cluster(report, png)
            report["plot"] = png.name
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(render_summary(report, scn))
        print(f"The scenario took {report['duration_s']:.0f} s; wrote {out} and {png}\n")
        failed = failed or not report["ok"]
    return 1 if failed else 0


def run_scenario(scn: ClusterScenario, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one scenario (torn down whatever happens), simulate it, and report."""
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    host: dict[str, Any] = {
        "load_average_before": load_average(),
        "top_processes_before": top_processes(),
    }
    progress(f"[{scn.name}] waiting for the CPUs to be quiet (up to {args.quiet_wait_s:.0f} s)")
    host["waited_for_quiet_s"], host["busy_before"] = wait_for_quiet(
        args.quiet_wait_s, QUIET_BUSY_SHARE, progress
    )
    host["load_average_at_start"] = load_average()
    code = code_state(MEASURED_CODE)
    network = NamespaceNetwork(scn.congestion_control)
    work = new_work_dir(args.work_dir, f"starling-cluster-{scn.name}-")
    run = ClusterRun(scn, network, work, args.keep_work)
    rounds: dict[str, list[dict[str, Any]]] = {"p2p": [], "direct": []}
    setup: dict[str, Any] = {}
    errors: list[str] = []
    try:
        progress(f"[{scn.name}] setting up {scn.peers + 3} nodes ...")
        run.build_network()
        run.start_registry()
        run.push_image()
        setup["build_and_push_s"] = round_(time.monotonic() - started, 1)
        setup["shaping_checks"] = run.check_shaping()
        progress(f"[{scn.name}] p2p: {scn.peers} peers + seed ...")
        rounds["p2p"].append(run.p2p_round(1))
        if not args.skip_direct:
            progress(f"[{scn.name}] direct: {scn.peers} peers ...")
            rounds["direct"].append(run.direct_round(1))
    except (NetworkError, ProcessFailed, RuntimeError, TimeoutError, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        progress(f"[{scn.name}] FAILED: {exc}")
        if run.registry is not None:
            progress(f"registry log, last lines:\n{log_tail(run.registry.log_path)}")
    finally:
        if run.registry is not None:
            run.registry.stop()
        shaping_commands = list(network.commands)
        teardown_notes = network.teardown()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    host["busy_after"] = round_(host_busy_over(1.0), 3)
    host["load_average_after"] = load_average()

    image = run.image
    blob_bytes = [size for _, size in image.blobs] if image else []
    seeds = [SEED + k for k in range(args.sim_seeds)]
    if image is not None:
        progress(f"[{scn.name}] p2psim: {len(seeds)} seeds x rule, direct ...")
        sim = predict(scn, blob_bytes, seeds)
    else:
        sim = {"error": "no image was pushed, nothing to simulate"}
    image_json = {
        "total_bytes": image.total_bytes if image else 0,
        "total": format_size(image.total_bytes) if image else "none",
        "blob_bytes_in_pull_order": blob_bytes,
        "config": list(image.config) if image else None,
        "layers": [list(layer) for layer in image.layers] if image else [],
        "manifest_digest": image.manifest_digest if image else None,
    }
    report = build_report(scn, image_json, rounds, sim, seeds)
    report["parameters"].update(
        sim_seeds=seeds,
        client_concurrency=CLIENT_CONCURRENCY,
        seed_client_concurrency="every blob at once (as p2psim's seed)",
        client_fallback="registry, for a blob the mirror answers with an error (containerd)",
        peer_settings="peer defaults; announced capacities = the node's shaper rates; "
        "rack, idc and location labels as p2psim gives its hosts",
        # What those defaults come to on these links (peer.upload_slots, peer.conductor);
        # the capacities announced are the shaper rates in bytes/s (bench.swarm_nodes).
        peer_upload_slots=[upload_slots_for(mbps * MBIT / 8) for mbps in scn.peer_up_mbps],
        seed_upload_slots=upload_slots_for(scn.seed_up_mbps * MBIT / 8),
        max_per_parent=MAX_PER_PARENT,
        skip_direct=args.skip_direct,
    )
    warnings = list(run.warnings)
    if host["busy_before"] > QUIET_BUSY_SHARE:
        warnings.append(
            f"{host['busy_before']:.0%} of the CPUs were busy when the run started, after "
            f"waiting {host['waited_for_quiet_s']:.0f} s (other load on the machine)"
        )
    if sim.get("error"):
        warnings.append(f"p2psim failed: {sim['error']}")
    code_changed = code_state(MEASURED_CODE)["sources_sha256"] != code["sources_sha256"]
    if code_changed:
        warnings.append("sources changed during the run")
    all_ok = bool(rounds["p2p"]) and all(r["all_ok"] for mode in rounds.values() for r in mode)
    report.update(
        ok=not errors and all_ok and not sim.get("error"),
        command=shlex.join(sys.orig_argv),
        date=started_at.isoformat(timespec="seconds"),
        machine={**machine_facts(), "iproute2": first_line(["ip", "-V"])},
        host=host,
        code=code,
        code_changed_during_run=code_changed,
        shaping={
            "kind": "netns",
            "note": "one network namespace per node; veth into a bridge (the core's, or "
            "its rack's) in a namespace of its own; tc tbf on each node's eth0 (upload) "
            "and bridge port (download), on the registry's eth0 (egress) and on both ends "
            "of each rack's uplink veth; the scheduler is not shaped; no added latency "
            "(no netem on this kernel)",
            "tcp_congestion_control": scn.congestion_control_label,
            "commands": shaping_commands,
        },
        setup=setup,
        teardown_notes=teardown_notes,
        errors=errors,
        warnings=warnings,
        work_dir=str(work) if args.keep_work else None,
        duration_s=round_(time.monotonic() - started, 1),
    )
    return report


def top_processes() -> list[str]:
    """The busiest processes (ps %CPU: each one's average over its life), for the record."""
    argv = ["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu", "--no-headers"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip()[:160] for line in result.stdout.splitlines()[:TOP_PROCESSES]]


if __name__ == "__main__":
    sys.exit(main())
