"""`make demo`: a Starling swarm on this machine, then p2psim's answer for 1000 nodes.

1. A CNCF distribution registry with a generated multi-layer image, `p2p-scheduler`, a
   seed peer (`p2p-peer --seed`) and a few peers on 127.0.0.1, each node with its own
   private containerd whose hosts.toml names that node's peer as its registry mirror.
2. The seed and every node pull the image at the same instant (`ctr images pull` through
   the mirror; the seed by HTTP through its own mirror). Each peer's /metrics tells
   where its bytes came from; a counting proxy in front of the registry tells how many
   blob bytes the registry sent; every blob received is checked against its digest.
3. Everything is stopped, then `p2psim --nodes 1000` simulates the same scheduler code
   on a modelled 1000-node cluster and writes a PNG of node completion times.

Configs, logs, the summary (summary.json) and the plot stay in the work dir (default
.demo/ in the repository, replaced on the next run); the bulky data is deleted on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from deploy.local.local_swarm import LocalSwarm, SwarmRun  # noqa: E402
from deploy.local.summary import (  # noqa: E402
    all_pulls_ok,
    p2p_bytes,
    registry_ratio,
    summary_json,
    summary_lines,
)
from peer.pieces import MiB  # noqa: E402
from peer.sizes import format_size  # noqa: E402
from tests.support.containerd import ContainerdProcess, containerd_unavailable_reason  # noqa: E402
from tests.support.registry import registry_unavailable_reason  # noqa: E402

DEFAULT_WORK_DIR = REPO_ROOT / ".demo"
# Written into the work dir, so a later run only ever deletes a directory the demo made.
MARKER = ".starling-demo"
DEFAULT_LAYERS_MIB = "64,32,8,1"
SMALL_LAYERS_MIB = "4,2,1"
# What the swarm part must show for the demo to exit 0.
MAX_REGISTRY_RATIO = 1.1


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def indent(text: str) -> None:
    lines = text.rstrip().splitlines()
    print("\n".join(f"    {line}" if line.strip() else "" for line in lines), flush=True)


class Steps:
    """Names the step in progress, so a failure can say which one failed."""

    def __init__(self) -> None:
        self.current = "checking prerequisites"

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.current = what
        say(what)
        yield


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", type=int, default=4, help="normal peers (default 4)")
    parser.add_argument(
        "--containerd",
        type=int,
        default=None,
        metavar="N",
        help="how many of the peers pull through a containerd of their own; the others "
        "GET every blob over HTTP through their mirror (default: all)",
    )
    parser.add_argument(
        "--layers-mib",
        default=DEFAULT_LAYERS_MIB,
        help=f"layer sizes (default {DEFAULT_LAYERS_MIB})",
    )
    parser.add_argument(
        "--small", action="store_true", help=f"a small image: layers of {SMALL_LAYERS_MIB} MiB"
    )
    parser.add_argument("--skip-sim", action="store_true", help="do not run p2psim")
    parser.add_argument(
        "--sim-nodes", type=int, default=1000, help="nodes for p2psim (default 1000)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="configs, logs, summary.json and the plot (default: .demo/ in the repository, "
        "replaced on each run)",
    )
    args = parser.parse_args(argv)
    if args.peers < 1:
        parser.error("--peers must be at least 1")
    if args.small:
        args.layers_mib = SMALL_LAYERS_MIB
    try:
        args.layer_sizes = [int(float(x) * MiB) for x in args.layers_mib.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--layers-mib: not a list of numbers: {args.layers_mib}")
    if not args.layer_sizes or min(args.layer_sizes) <= 0 or args.sim_nodes < 1:
        parser.error("--layers-mib needs positive sizes and --sim-nodes at least 1")
    return args


def prepare_work_dir(work_dir: Path) -> None:
    """An empty work dir; the previous run's is removed only if the demo made it."""
    if work_dir.exists() and any(work_dir.iterdir()):
        if not (work_dir / MARKER).exists():
            raise SystemExit(f"demo: {work_dir} is not empty and was not made by the demo")
        # A run killed mid-unpack could leave containerd's bind mounts behind.
        ContainerdProcess._unmount_under(work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / MARKER).write_text("made by deploy/local/demo.py; deleted by its next run\n")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def relative(path: Path | str) -> str:
    """A path as short as it can be shown: relative to the current directory if inside."""
    path = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def run_swarm(args: argparse.Namespace, swarm: LocalSwarm, steps: Steps) -> SwarmRun:
    sizes = ", ".join(format_size(s) for s in args.layer_sizes)
    with steps.step("starting a CNCF distribution registry and pushing a generated image"):
        image = swarm.start_registry()
        assert swarm.registry is not None and swarm.proxy is not None
        indent(
            f"registry {swarm.registry.url}: {image.reference}, layers {sizes} "
            f"({format_size(image.total_blob_bytes)} of blobs with the config)"
        )
        indent(f"a counting proxy at {swarm.proxy.url} counts every blob byte it sends")
    with steps.step("starting p2p-scheduler"):
        scheduler = swarm.start_scheduler()
        indent(f"{scheduler.url} (cluster token shared with the peers)")
    with steps.step(f"starting a seed peer and {args.peers} peers"):
        swarm.start_peers()
        assert swarm.seed is not None
        for peer in [swarm.seed, *swarm.peers]:
            role = "seed, goes to the registry first" if peer is swarm.seed else "peer"
            indent(f"{peer.work_dir.name:<6} mirror {peer.url} ({role})")
    if swarm.containerd_count:
        with steps.step(f"starting {swarm.containerd_count} private containerd daemons"):
            swarm.start_containerds()
            name, hosts_dir = next(iter(swarm.hosts_dirs.items()))
            hosts_file = next(hosts_dir.glob("*/hosts.toml"))
            indent(f"each names its node's peer as the mirror; {name}'s {relative(hosts_file)}:")
            indent(textwrap.indent(hosts_file.read_text(), "    "))
    clients = f"{swarm.containerd_count} with ctr images pull" if swarm.containerd_count else ""
    by_http = args.peers - swarm.containerd_count
    if by_http:
        clients += (", " if clients else "") + f"{by_http} by HTTP GET through their mirror"
    with steps.step(f"the seed and {args.peers} peers pull at once ({clients})"):
        return swarm.pull_at_once()


def run_sim(args: argparse.Namespace, steps: Steps) -> dict[str, str]:
    plot = relative(args.work_dir / f"p2psim-{args.sim_nodes}.png")
    report = relative(args.work_dir / f"p2psim-{args.sim_nodes}.json")
    script = Path(sys.executable).with_name("p2psim")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "simulations.cli"]
    flags = ["--nodes", str(args.sim_nodes), "--plot", plot]
    with steps.step(
        f"p2psim: {args.sim_nodes} modelled nodes pull the default scenario's image at once, "
        "scheduled by the same scheduler code (simulated, not measured)"
    ):
        print(f"$ p2psim {' '.join(flags)}", flush=True)
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        status = subprocess.run([*command, *flags, "--json", report], env=env).returncode
    if status != 0:
        raise RuntimeError(f"p2psim exited with status {status}")
    return {"plot": str(Path(plot).resolve()), "json": str(Path(report).resolve())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if reason := registry_unavailable_reason():
        print(f"demo needs the registry: {reason} (make deps installs it)", file=sys.stderr)
        return 1
    ctr_reason = containerd_unavailable_reason()
    wanted = args.peers if args.containerd is None else args.containerd
    containerds = 0 if ctr_reason else max(0, min(args.peers, wanted))
    prepare_work_dir(args.work_dir)
    work = relative(args.work_dir)
    # SIGINT too: a process started in the background by a non-interactive shell inherits
    # SIGINT ignored, and Python then installs no handler of its own for it.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    swarm = LocalSwarm(args.work_dir, args.peers, containerds, args.layer_sizes)
    steps = Steps()
    timing: dict[str, float] = {}
    facts: dict[str, object] = {"ok": False, "timing_s": timing}
    sim: dict[str, str] | None = None
    try:
        if ctr_reason:
            say(f"containerd not usable here ({ctr_reason}): every peer pulls over HTTP")
        run = run_swarm(args, swarm, steps)
        say("results (measured)")
        for line in summary_lines(run):
            indent(line)
        facts["swarm"] = summary_json(run)
        timing.update(setup=run.started_at - started, swarm_pull=run.wall_seconds)
        steps.current = "stopping the swarm"
        swarm.stop()
        say(f"swarm stopped; its configs and logs are in {work}/:")
        logs = ", ".join(relative(path).removeprefix(work + "/") for _, path in swarm.logs)
        indent(textwrap.fill(logs, width=92, break_on_hyphens=False))
        steps.current = "checking the swarm's results"
        if not (
            all_pulls_ok(run) and registry_ratio(run) <= MAX_REGISTRY_RATIO and p2p_bytes(run) > 0
        ):
            raise RuntimeError(
                "the swarm did not show what it should: every pull ok, the registry sending "
                f"at most {MAX_REGISTRY_RATIO}x the image, bytes passed between peers"
            )
        if not args.skip_sim:
            sim_started = time.monotonic()
            sim = facts["sim"] = run_sim(args, steps)
            timing["sim"] = time.monotonic() - sim_started
        facts["ok"] = True
        done = f"demo done in {time.monotonic() - started:.0f} s; summary in {work}/summary.json"
        if sim is not None:
            done += f", plot in {relative(sim['plot'])}"
        say(done)
        return 0
    except KeyboardInterrupt:
        print(f"\ndemo interrupted during: {steps.current}; stopping everything", file=sys.stderr)
        return 130
    except Exception as exc:
        print(
            f"\ndemo FAILED at step: {steps.current}\n{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        if swarm.logs:
            print(f"logs (kept in {work}/):", file=sys.stderr)
            for what, path in swarm.logs:
                print(f"    {what:<22} {relative(path)}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C or SIGTERM while stopping would leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        swarm.stop()
        with contextlib.suppress(OSError):
            (args.work_dir / "summary.json").write_text(json.dumps(facts, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
