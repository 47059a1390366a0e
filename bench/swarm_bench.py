"""N peers pulling one image at once: through the swarm, and straight from the registry.

Run as ``python -m bench.swarm_bench`` (as root: it makes network namespaces). A real
registry, one ``p2p-scheduler``, one seed ``p2p-peer`` and N ``p2p-peer`` processes each
run in a network namespace of their own, with kernel traffic shaping (``tc tbf``) on
every node's upload and download and on the registry's egress (see
:mod:`bench.swarm_net`). Then (:mod:`bench.swarm_run`):

* ``p2p``: a client on every node (the seed too) pulls the image's manifest and blobs
  through its node's mirror, all at the same moment, and checks every digest. Like
  containerd with ``deploy/containerd/hosts.toml`` it falls back to the registry for a
  blob the mirror answers with an error (``--no-fallback``: it asks the mirror again);
* ``direct``: the peers are stopped and the same N nodes pull straight from the
  registry under the same limits.

Reported per mode: the time until all N normal peers have the image (makespan), the
spread of their completion times, the blob bytes the registry sent (from its access
log, as a multiple of the image size), the share of the normal peers' bytes that came
from the swarm (from their /metrics), how much of each kind of link was used, and the
makespan over the Kumar & Ross lower bound ``max(F/u_s, F/d_min, N*F/(u_s + u_seed +
sum u_i))`` (:mod:`bench.swarm_report`).

Defaults: 16 peers, a 64 MiB image in 5 layers, every peer (and the seed) 40 Mbit/s up
and 80 Mbit/s down, registry egress 80 Mbit/s. The registry is then the bottleneck for
direct pulls (16 copies at u_s take ~107 s, one node's download ~7 s), while the swarm's
upload capacity bounds P2P at ~11 s. The rates are low enough that the benchmark's own
processes need about one of the two cores, so the shapers rather than the CPUs set the
pace (each round records the CPU use to check it). A run takes about five minutes.
If namespaces or tc do not work, the nodes share 127.0.0.1, only the peers' in-app
upload cap limits anything, and the output says so loudly.

Results go to ``bench/results/swarm.json`` and a summary on stdout.
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

from bench.probes import host_busy_over, load_average, wait_for_quiet
from bench.report import machine_facts, round_
from bench.runner import (
    LOCK_PATH,
    add_network_flags,
    add_work_flags,
    hold_bench_lock,
    new_work_dir,
    raise_on_sigterm,
)
from bench.swarm_net import (
    LoopbackNetwork,
    NamespaceNetwork,
    Network,
    NetworkError,
    leftover_namespaces,
    netns_unavailable_reason,
    remove_namespaces,
)
from bench.swarm_nodes import CLIENT_CONCURRENCY
from bench.swarm_report import (
    TCP_PAYLOAD_SHARE,
    Capacities,
    code_state,
    direct_lower_bound,
    figures_for,
    lower_bound,
    render_summary,
    target_checks,
)
from bench.swarm_run import MBIT, MiB, SwarmRun, progress
from peer.sizes import format_size
from tests.support.processes import ProcessFailed, log_tail
from tests.support.registry import registry_unavailable_reason

DEFAULT_OUT = "bench/results/swarm.json"
# Before starting, wait for the machine to be at most this busy (other sessions' tests).
QUIET_BUSY_SHARE = 0.15


# Command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.swarm_bench",
        description="N peers pull one image at once through the Starling swarm and straight "
        "from the registry, under kernel traffic shaping; compared with the fluid lower "
        "bound. Needs root (network namespaces).",
    )
    add_network_flags(parser, peers=16)
    parser.add_argument(
        "--seed-up-mbps", type=float, default=None, help="the seed's upload (default: a peer's)"
    )
    parser.add_argument(
        "--seed-down-mbps",
        type=float,
        default=None,
        help="the seed's download (default: a peer's)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="p2p + direct rounds; medians (default 1)"
    )
    parser.add_argument(
        "--min-piece-mib",
        type=int,
        default=None,
        help="peers' min_piece_bytes in MiB (default: the peer's own default)",
    )
    parser.add_argument(
        "--shaping",
        choices=["auto", "netns", "app"],
        default="auto",
        help="netns: kernel shaping or fail; app: in-app upload caps only (no kernel "
        "shaping); auto: netns when it works (default)",
    )
    parser.add_argument(
        "--skip-direct", action="store_true", help="only the p2p mode (for quick looks)"
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="p2p clients retry their mirror after an error instead of falling back to the "
        "registry as containerd does (default: fall back): the swarm's own makespan",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    add_work_flags(parser, quiet_wait_s=120.0)
    return parser


def _choose_network(mode: str) -> tuple[Network, str]:
    if mode == "app":
        return LoopbackNetwork(), "in-app limits were asked for (--shaping app)"
    if os.geteuid() != 0:
        reason = "not root: network namespaces need root"
    else:
        reason = netns_unavailable_reason() or ""
    if not reason:
        return NamespaceNetwork(), ""
    if mode == "netns":
        raise NetworkError(reason)
    return LoopbackNetwork(), reason


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.seed_up_mbps = args.seed_up_mbps or args.peer_up_mbps
    args.seed_down_mbps = args.seed_down_mbps or args.peer_down_mbps
    if args.peers < 1 or args.image_mib < 1 or args.rounds < 1:
        print("--peers, --image-mib and --rounds must be at least 1", file=sys.stderr)
        return 2
    if reason := registry_unavailable_reason():
        print(f"cannot run the benchmark: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    code = code_state()
    host: dict[str, Any] = {"load_average_before": load_average()}
    host["waited_for_quiet_s"], host["busy_before"] = wait_for_quiet(
        args.quiet_wait_s, QUIET_BUSY_SHARE, progress
    )

    lock = hold_bench_lock()  # one namespace benchmark at a time
    if lock is None:
        print(f"another swarm or cluster benchmark holds {LOCK_PATH}", file=sys.stderr)
        return 2
    cleanup_notes: list[str] = []
    if os.geteuid() == 0 and shutil.which("ip"):
        cleanup_notes = remove_namespaces(leftover_namespaces())
        for note in cleanup_notes:
            progress(f"cleanup of an earlier run: {note}")
    try:
        network, fallback_reason = _choose_network(args.shaping)
    except NetworkError as exc:
        print(f"cannot run the benchmark with --shaping netns: {exc}", file=sys.stderr)
        return 2
    if fallback_reason:
        progress("!" * 78)
        progress(f"NO KERNEL TRAFFIC SHAPING ({fallback_reason}).")
        progress("Falling back to the peers' in-app upload caps; downloads and the registry")
        progress("egress are NOT limited, so these figures do not test the scenario asked for.")
        progress("!" * 78)

    work = new_work_dir(args.work_dir, "starling-swarm-")
    run = SwarmRun(args, network, work)
    rounds: dict[str, list[dict[str, Any]]] = {"p2p": [], "direct": []}
    setup: dict[str, Any] = {}
    errors: list[str] = []
    try:
        progress(f"setting up {args.peers + 3} nodes ({network.kind}) ...")
        run.build_network()
        run.start_registry()
        progress(f"building and pushing a {args.image_mib} MiB image ...")
        run.push_image()
        setup["build_and_push_s"] = round_(time.monotonic() - started, 1)
        setup["shaping_checks"] = run.check_shaping()
        for round_no in range(1, args.rounds + 1):
            progress(f"round {round_no}: p2p ({args.peers} peers + seed) ...")
            rounds["p2p"].append(run.p2p_round(round_no))
            _report_round("p2p", rounds["p2p"][-1])
            if not args.skip_direct:
                progress(f"round {round_no}: direct ({args.peers} peers) ...")
                rounds["direct"].append(run.direct_round(round_no))
                _report_round("direct", rounds["direct"][-1])
    except (NetworkError, ProcessFailed, RuntimeError, TimeoutError, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        progress(f"FAILED: {exc}")
        if run.registry is not None:
            progress(f"registry log, last lines:\n{log_tail(run.registry.log_path)}")
    finally:
        if run.registry is not None:
            run.registry.stop()
        shaping_commands = list(network.commands)
        cleanup_notes += network.teardown()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    host["busy_after"] = round_(host_busy_over(1.0), 3)
    host["load_average_after"] = load_average()

    report = build_report(
        args, run, network, fallback_reason, shaping_commands, rounds, setup, errors
    )
    report.update(
        command=shlex.join(sys.orig_argv),
        date=started_at.isoformat(timespec="seconds"),
        host=host,
        code=code,
        code_changed_during_run=code_state()["sources_sha256"] != code["sources_sha256"],
        cleanup_notes=cleanup_notes,
        work_dir=str(work) if args.keep_work else None,
        duration_s=round_(time.monotonic() - started, 1),
    )
    if report["code_changed_during_run"]:
        report["warnings"].append("peer/scheduler sources changed during the run")
    if host["busy_before"] > 0.1:
        report["warnings"].append(
            f"{host['busy_before']:.0%} of the CPUs were busy just before the run"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The summary is built first so the JSON has the same fields the table shows.
    summary = render_summary(report) if run.image is not None else ""
    out.write_text(json.dumps(report, indent=2) + "\n")
    if summary:
        print(summary)
    print(f"\nwrote {out}")
    failed = errors or not all(r["all_ok"] for mode in rounds.values() for r in mode)
    return 1 if failed else 0


def _report_round(mode: str, result: dict[str, Any]) -> None:
    share = result.get("p2p_share")
    progress(
        f"  {mode}: makespan {result['makespan_s']} s, p50 {result['p50_s']} s, registry "
        f"{result['registry_blob_bytes_over_image']}x image"
        + (f", P2P share {share:.1%}" if share is not None else "")
        + f", CPU busy {result['cpu']['host_cpu_busy']:.0%}"
        + ("" if result["all_ok"] else ", SOME PULLS FAILED")
    )


def build_report(
    args: argparse.Namespace,
    run: SwarmRun,
    network: Network,
    fallback_reason: str,
    shaping_commands: list[str],
    rounds: dict[str, list[dict[str, Any]]],
    setup: dict[str, Any],
    errors: list[str],
) -> dict[str, Any]:
    image = run.image
    image_bytes = image.total_bytes if image else args.image_mib * MiB
    caps = Capacities(
        image_bytes=image_bytes,
        peers=args.peers,
        registry_up_Bps=args.registry_egress_mbps * MBIT / 8,
        peer_up_Bps=[args.peer_up_mbps * MBIT / 8] * args.peers,
        peer_down_Bps=[args.peer_down_mbps * MBIT / 8] * args.peers,
        seed_up_Bps=args.seed_up_mbps * MBIT / 8,
    )
    bound = lower_bound(caps)
    direct_bound = direct_lower_bound(caps)
    figures = {
        mode: figures_for(results, bound["seconds"], direct_bound["seconds"])
        for mode, results in rounds.items()
        if results
    }
    shaping: dict[str, Any]
    if isinstance(network, NamespaceNetwork):
        shaping = {
            "kind": "netns",
            "note": "kernel shaping: one network namespace per node, veth into a bridge in "
            "its own namespace, tc tbf on each node's eth0 (upload) and on its bridge port "
            "(download); the registry's eth0 carries its egress limit; the scheduler is not "
            "shaped; no added latency (no netem on this kernel)",
            "commands": shaping_commands,
        }
    else:
        shaping = {
            "kind": "app",
            "note": f"no kernel shaping ({fallback_reason}); only the peers' in-app "
            "upload_rate_bps limits anything; downloads and the registry egress are NOT "
            "limited, so the lower bound below is not what constrained the run",
            "commands": [],
        }
    warnings = list(run.warnings)
    if shaping["kind"] != "netns":
        warnings.insert(0, shaping["note"])
    return {
        "benchmark": "swarm",
        "machine": {
            **machine_facts(),
            "iproute2": first_line(["ip", "-V"]),
        },
        "parameters": {
            "peers": args.peers,
            "image_mib": args.image_mib,
            "peer_up_mbps": args.peer_up_mbps,
            "peer_down_mbps": args.peer_down_mbps,
            "seed_up_mbps": args.seed_up_mbps,
            "seed_down_mbps": args.seed_down_mbps,
            "registry_egress_mbps": args.registry_egress_mbps,
            "rounds": args.rounds,
            "min_piece_mib": args.min_piece_mib,
            "client_concurrency": CLIENT_CONCURRENCY,
            "client_fallback": "mirror again until done (--no-fallback)"
            if args.no_fallback
            else "registry, for a blob the mirror answers with an error (containerd)",
            "peer_settings": "peer defaults (upload_slots, pieces_in_flight, piece sizes) "
            "unless min_piece_mib is given; announced capacities = the link rates",
        },
        "image": {
            "total_bytes": image_bytes,
            "total": format_size(image_bytes),
            "config": list(image.config) if image else None,
            "layers": [list(layer) for layer in image.layers] if image else [],
            "manifest_digest": image.manifest_digest if image else None,
        },
        "shaping": shaping,
        "setup": setup,
        "units": {
            "mbps": "10^6 bits per second at the shaper (Ethernet frames, headers included)",
            "seconds": "wall clock from the go signal sent to every client at once",
            "makespan_s": "until the last of the N normal peers has every blob, verified",
            "registry_blob_bytes": "body bytes of blob GETs (200/206) in the registry's "
            "access log; registry_tx_bytes: everything its interface sent",
            "p2p_share": "share of the normal peers' downloaded bytes that came from other "
            "peers or the seed (p2p_peer_download_bytes_total by source)",
            "host_cpu_busy": "share of all CPUs busy during the pulls (0..1)",
        },
        "lower_bound": {
            **bound,
            "formula": "max(F/u_s, F/d_min, N*F/(u_s + u_seed + sum u_i))",
            "seed": "not one of the N receivers; its upload u_seed counts like a peer's",
            "rates": "the configured shaper rates",
            "tcp_payload_bound_s": lower_bound(caps, TCP_PAYLOAD_SHARE)["seconds"],
            "tcp_payload_note": f"the same with every rate times {TCP_PAYLOAD_SHARE:.4f} "
            "(TCP payload per 1514-byte frame): what a TCP transfer can attain at best",
        },
        "direct_lower_bound": {
            **direct_bound,
            "formula": "max(N*F/u_s, F/d_min)",
            "tcp_payload_bound_s": direct_lower_bound(caps, TCP_PAYLOAD_SHARE)["seconds"],
        },
        "rounds_done": len(rounds["p2p"]),
        "figures": figures,
        "targets": target_checks(figures, shaped=shaping["kind"] == "netns"),
        "samples": rounds,
        "errors": errors,
        "warnings": warnings,
    }


def first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else ""


if __name__ == "__main__":
    sys.exit(main())
