"""What the swarm and cluster benchmarks (and the mirror benchmark) share around a run:
the command-line flags of the network they shape, SIGTERM as a clean exit, and the lock
that keeps two namespace benchmarks from running at once."""

from __future__ import annotations

import argparse
import fcntl
import tempfile
from pathlib import Path
from typing import IO

# Shared by the swarm and cluster benchmarks: their namespaces have fixed names, and a
# second run would take the first one's namespaces for leftovers of a crash.
LOCK_PATH = Path(tempfile.gettempdir()) / "starling-swarm-bench.lock"


def raise_on_sigterm(signum: int, frame: object) -> None:
    """A SIGTERM handler: exit through ``finally`` blocks, so the teardown runs."""
    raise SystemExit(128 + signum)


def hold_bench_lock() -> IO[str] | None:
    """Take the namespace benchmarks' lock for this process's lifetime; None if taken."""
    lock = open(LOCK_PATH, "w")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


def add_network_flags(parser: argparse.ArgumentParser, peers: int) -> None:
    """Peers, image size and link rates: the flags both namespace benchmarks take."""
    parser.add_argument("--peers", type=int, default=peers, help=f"normal peers (default {peers})")
    parser.add_argument(
        "--image-mib", type=int, default=64, help="image size in MiB, 5 layers (default 64)"
    )
    parser.add_argument(
        "--peer-up-mbps", type=float, default=40.0, help="each peer's upload (default 40)"
    )
    parser.add_argument(
        "--peer-down-mbps",
        type=float,
        default=80.0,
        help="each peer's download (default 80); mixed NICs: the fast NIC, both ways",
    )
    parser.add_argument(
        "--registry-egress-mbps",
        type=float,
        default=80.0,
        help="the registry's upload (default 80)",
    )


def new_work_dir(parent: str, prefix: str) -> Path:
    """A fresh directory for one run's data dirs and logs, under ``parent`` (``--work-dir``),
    which is created first if it does not exist yet."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def add_work_flags(parser: argparse.ArgumentParser, quiet_wait_s: float) -> None:
    """Where data dirs and logs go, and how long to wait for a quiet machine."""
    parser.add_argument(
        "--work-dir", default="/var/tmp", help="where data dirs and logs go (default /var/tmp)"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep logs and data dirs")
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=quiet_wait_s,
        help="wait up to this long for other CPU load to stop before measuring "
        f"(default {quiet_wait_s:g})",
    )
