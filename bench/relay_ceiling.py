"""What any cold relay can reach on this machine: compiled tools doing a cold peer's work.

Run as ``python -m bench.relay_ceiling`` (``make bench``). Issue 2's cold target compares a
raw GET through a cold peer with a raw GET straight from the registry. A cold peer must
at least receive the blob, write it to its cache and hash it (the blob's sha256 gates the
last byte), then send it on. This probe times that work done by compiled tools, with no
Python in the path, against the direct GET, in one run:

* ``direct``: ``curl`` from the registry to ``/dev/null`` (the benchmark's baseline);
* ``hash``: the same ``curl`` piped into ``openssl dgst -sha256`` (one hash pass);
* ``hash_and_write``: ``curl | tee FILE | openssl dgst -sha256`` (the hash and the cache
  write, still without sending anything on);
* ``hash_file``: ``openssl dgst -sha256`` of the written file alone (the hash pass with
  the bytes already in memory).

Each of these does less than a peer must, so each ratio is an upper bound on a cold
peer's ratio here. The registry's storage and the files are on tmpfs (``/dev/shm``), as in
the mirror benchmark's tmpfs run. Results go to ``bench/results/relay-ceiling.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import code_state, machine_facts, round_
from peer.sizes import format_size, parse_size
from tests.support.images import push_image
from tests.support.registry import RegistryProcess, registry_unavailable_reason

RESULTS = Path(__file__).resolve().parent / "results" / "relay-ceiling.json"
TOOLS = ("curl", "openssl", "tee")


def pipelines(url: str, copy: Path) -> dict[str, str]:
    """The shell pipelines timed, by name (``bash -o pipefail``: any stage failing fails)."""
    get = f"curl -sf {shlex.quote(url)}"
    hash_ = "openssl dgst -sha256"
    file = shlex.quote(str(copy))
    return {
        "direct": f"{get} -o /dev/null",
        "hash": f"{get} | {hash_} >/dev/null",
        "hash_and_write": f"{get} | tee {file} | {hash_} >/dev/null",
        "hash_file": f"{hash_} {file} >/dev/null",
    }


def time_pipeline(command: str) -> float:
    started = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True, timeout=300)
    return time.monotonic() - started


def measure(url: str, work: Path, rounds: int) -> dict[str, list[float]]:
    """Every pipeline once per round, interleaved so drift hits them alike."""
    copy = work / "copy"
    commands = pipelines(url, copy)
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():  # hash_file reads what hash_and_write wrote
            seconds[name].append(time_pipeline(command))
        copy.unlink(missing_ok=True)
    return seconds


def summarize(seconds: dict[str, list[float]]) -> dict[str, Any]:
    """Median seconds per pipeline and its speed as a share of the direct GET's."""
    direct = statistics.median(seconds["direct"])
    return {
        name: {
            "median_s": round_(statistics.median(runs)),
            "speed_vs_direct": round_(direct / statistics.median(runs)),
            "runs_s": [round_(run) for run in runs],
        }
        for name, runs in seconds.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="blob size (default 1GiB)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every pipeline")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    problem = registry_unavailable_reason() or (missing and f"missing tools: {missing}")
    if problem:
        print(f"relay_ceiling: {problem}", file=sys.stderr)
        return 2
    size = parse_size(args.size)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="relay-ceiling-", dir="/dev/shm"))
    registry = RegistryProcess(work / "registry")
    try:
        registry.start()
        image = push_image(
            registry.url, "bench/relay", "v1", [size], seed=5, work_dir=work / "image"
        )
        digest = image.layers[0][0]
        shutil.rmtree(work / "image", ignore_errors=True)  # only the registry's copy stays
        url = f"{registry.url}/v2/bench/relay/blobs/{digest}"
        seconds = measure(url, work, args.rounds)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = summarize(seconds)
    report = {
        "benchmark": "relay_ceiling",
        "command": shlex.join(["python", "-m", "bench.relay_ceiling", *(argv or sys.argv[1:])]),
        "started_at": started_at,
        "size_bytes": size,
        "rounds": args.rounds,
        "pipelines": pipelines("URL", Path("FILE")),
        "results": results,
        "machine": machine_facts(),
        "code": code_state(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"Relay ceiling: {format_size(size)} blob, {args.rounds} rounds, tmpfs")
    for name, result in results.items():
        print(f"  {name:15s} {result['median_s']:7.3f} s  {result['speed_vs_direct']:.2f}x direct")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
