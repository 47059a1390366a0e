"""p2psim's optional compiled modules: used only when they match the sources, and then
they give exactly the pure-Python results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulations import accel
from simulations.accel_build import build

REPO_ROOT = Path(__file__).resolve().parents[3]

# Runs through every path of the compiled modules: the strategies, seeds, a NIC mix,
# stragglers, churn, staggered arrivals, rack gateways and stripes; printed as JSON with the files
# the compiled modules came from.
RUN = """
import importlib, json
import simulations  # first: it puts the build in place
from simulations import accel
from simulations.report import simulate
from simulations.scenario import Scenario
base = Scenario(name="accel", nodes=40, hosts_per_rack=10, layers_mib=(6.0, 20.0), seed=5,
    seed_peers=1, nic_mix_gbps=((10.0, 0.5), (1.0, 0.5)), straggler_fraction=0.1,
    churn_fraction=0.1, arrival_spread_s=1.0)
runs = [base.replace(strategy=s) for s in ("rule", "random", "kraken", "oracle", "direct")]
runs += [base.replace(rack_gateways=1), base.replace(rack_stripes=0)]
results = [simulate(run).to_json() for run in runs]
files = [importlib.import_module(m).__file__ for m in accel.MODULES]
print(json.dumps({"files": files, "results": results}))
"""


def _run(setting: str) -> dict[str, object]:
    env = {**os.environ, accel.ENV: setting}
    done = subprocess.run(
        [sys.executable, "-c", RUN], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    output: dict[str, object] = json.loads(done.stdout)
    return output


def _manifest(directory: Path) -> dict[str, object]:
    manifest: dict[str, object] = json.loads((directory / accel.MANIFEST).read_text())
    return manifest


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler (apt-get install gcc)")
def test_compiled_modules_give_the_pure_results_and_go_unused_once_stale(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "accel"
    build(directory)
    assert accel.stale_reason(directory) is None

    compiled, pure = _run(str(directory)), _run("0")
    assert all(str(directory) in f and f.endswith(".so") for f in compiled["files"])  # type: ignore[attr-defined]
    assert all(f.endswith(".py") for f in pure["files"])  # type: ignore[attr-defined]
    assert compiled["results"] == pure["results"]

    # A source edited since the build: the build is not used.
    manifest = _manifest(directory)
    manifest["sources"]["simulations.network"] = "0" * 64  # type: ignore[index]
    (directory / accel.MANIFEST).write_text(json.dumps(manifest))
    assert accel.stale_reason(directory) == "simulations/network.py changed since the build"
    assert all(f.endswith(".py") for f in _run(str(directory))["files"])  # type: ignore[attr-defined]


def test_a_build_is_used_only_for_its_sources_and_python(tmp_path: Path) -> None:
    assert accel.stale_reason(tmp_path) == f"no compiled build in {tmp_path}"
    sources = {module: accel.digest(accel.source(module)) for module in accel.MODULES}
    manifest = {"python": accel.cache_tag(), "sources": sources}
    (tmp_path / accel.MANIFEST).write_text(json.dumps(manifest))
    assert accel.stale_reason(tmp_path) is None
    other_python = {**manifest, "python": ".cpython-39-x86_64-linux-gnu.so"}
    (tmp_path / accel.MANIFEST).write_text(json.dumps(other_python))
    assert "built for .cpython-39" in str(accel.stale_reason(tmp_path))
    fewer = {**manifest, "sources": {"simulations.clock": sources["simulations.clock"]}}
    (tmp_path / accel.MANIFEST).write_text(json.dumps(fewer))
    assert "built from ['simulations.clock']" in str(accel.stale_reason(tmp_path))
    (tmp_path / accel.MANIFEST).write_text("{not json")
    assert "unreadable manifest" in str(accel.stale_reason(tmp_path))


def test_the_test_suite_runs_the_pure_modules() -> None:
    import simulations.network

    assert os.environ[accel.ENV] == "0"
    assert accel.build_dir() is None
    assert simulations.network.__file__.endswith("network.py")
