"""`make demo` end to end: deploy/local/demo.py run as a user runs it, with small sizes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.containerd import containerd_unavailable_reason
from tests.support.registry import registry_unavailable_reason
from tests.support.requirements import require

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "deploy" / "local" / "demo.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _require_tools() -> None:
    require(registry_unavailable_reason())
    require(containerd_unavailable_reason())


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (every demo process names a
    config file in the work dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_demo_swarm_pulls_through_containerd_and_reports_what_it_measured(
    tmp_path: Path,
) -> None:
    _require_tools()
    work = tmp_path / "demo"
    argv = [sys.executable, str(DEMO), "--peers", "2", "--small", "--sim-nodes", "40"]
    done = subprocess.run(
        [*argv, "--work-dir", str(work)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=REPO_ROOT,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    facts = json.loads((work / "summary.json").read_text())
    swarm = facts["swarm"]
    assert facts["ok"] and swarm["all_pulls_ok"]
    # The seed by HTTP, each peer through a containerd of its own.
    assert [(n["name"], n["client"]) for n in swarm["nodes"]] == [
        ("seed", "http"),
        ("node1", "containerd"),
        ("node2", "containerd"),
    ]
    for node in swarm["nodes"]:
        assert node["ok"], node
        assert node["digests_ok"] == node["digests_total"] == swarm["blob_count"]
        received = node["from_origin_bytes"] + node["from_seed_bytes"] + node["from_peer_bytes"]
        assert received == swarm["image_bytes"], node
    assert 0 < swarm["registry_blob_bytes"] <= 1.1 * swarm["image_bytes"]
    assert swarm["p2p_bytes"] > 0
    assert 0 < facts["timing_s"]["swarm_pull"] < 60

    # The printed summary says the same.
    ratio = re.search(r"registry: sent .* image, ([0-9.]+)x the image", out)
    assert ratio is not None and float(ratio.group(1)) <= 1.1, out
    p2p = re.search(r"peer-to-peer: ([0-9.]+) (\w+) of the .* \(([0-9]+)%\)", out)
    assert p2p is not None and float(p2p.group(1)) > 0 and int(p2p.group(3)) > 0, out
    assert "every pull succeeded; all 12 blobs received match their sha256 digests" in out
    assert out.count("ctr images pull ") == 2, out

    # p2psim ran and its plot is where the demo says.
    plot = Path(facts["sim"]["plot"])
    assert plot == work / "p2psim-40.png"
    assert f"plot: {plot}" in out  # p2psim's own line; paths outside the cwd are absolute
    assert "makespan" in out
    assert plot.read_bytes().startswith(PNG_MAGIC)

    # Torn down: no process left, the bulky data gone, configs and logs kept.
    assert _processes_mentioning(str(work)) == []
    for name in ("seed", "node1", "node2"):
        assert (work / name / "peer.log").stat().st_size > 0
        assert not (work / name / "data").exists()
    assert not (work / "registry" / "storage").exists()
    assert not (work / "node1" / "containerd" / "root").exists()
    assert (work / "scheduler" / "scheduler.log").exists()


def test_ctrl_c_mid_pull_stops_every_process(tmp_path: Path) -> None:
    _require_tools()
    work = tmp_path / "demo"
    # Big enough that the pull is still running when the signal lands.
    argv = [sys.executable, str(DEMO), "--peers", "2", "--layers-mib", "96", "--skip-sim"]
    demo = subprocess.Popen(
        [*argv, "--work-dir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
        start_new_session=True,  # its own process group, as in a terminal
    )
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if "pull at once" in line:
                # Ctrl-C in a terminal signals the whole foreground process group.
                os.killpg(demo.pid, signal.SIGINT)
                break
        rest = demo.communicate(timeout=60)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = "".join(seen) + rest
    assert demo.returncode == 130, output
    assert "demo interrupted during: the seed and 2 peers pull at once" in output
    assert _processes_mentioning(str(work)) == []
    assert not (work / "node1" / "data").exists()
    assert not (work / "node1" / "containerd" / "root").exists()
