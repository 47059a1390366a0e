"""Optional compiled build of p2psim's hottest modules (mypyc), never a stale one.

A 1,000-node run spends its time in a few pure-Python modules: the event queue, the
network's sharing rule and the peer's piece picker. mypyc (part of mypy, already a dev
dependency) compiles those same sources, type annotations and all, into C extensions
that run the same code about 1.4 times faster and give identical results.

The compiled modules never sit next to the sources, where Python would import them in
preference to a ``.py`` edited since. ``python -m simulations.accel`` builds them into
``build/sim-accel/`` with a manifest of the sha256 of every source it compiled, and
:func:`activate` (run when ``simulations`` is imported) puts that directory in front of
the packages' search paths only if every source still matches and the Python is the
one it was built for. Anything else (no build, an edited source, no compiler) runs
the pure-Python modules, which are always the reference.

``STARLING_SIM_ACCEL=0`` turns the compiled modules off; ``STARLING_SIM_ACCEL=DIR``
uses the build in ``DIR``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / "build" / "sim-accel"
ENV = "STARLING_SIM_ACCEL"
# Compiled together (mypyc then calls across them directly). Measured on the 1,000-node
# default run (pure 11.7 s of CPU): the queue, network and picker took it to 9.2 s, the
# swarm module too to 7.7-7.9 s, for a build of 20 s instead of 6.
MODULES = (
    "simulations.clock",
    "simulations.links",
    "simulations.network",
    "peer.piece_picker",
    "simulations.sim_peers",
    "simulations.sim_picking",
    "simulations.swarm",
)
MANIFEST = "manifest.json"

# What activate() found: the build directory in use, or why none is.
status = "not checked"


def label() -> str:
    """Which modules this process runs, for a run's summary."""
    return "compiled modules" if status.startswith("compiled") else f"pure Python: {status}"


def source(module: str) -> Path:
    return REPO_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_tag() -> str:
    # Extensions are specific to the interpreter, its version and platform.
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def build_dir() -> Path | None:
    """The build to use, from ``STARLING_SIM_ACCEL``; None when turned off."""
    setting = os.environ.get(ENV, "")
    if setting == "0":
        return None
    return Path(setting) if setting else DEFAULT_DIR


def stale_reason(directory: Path) -> str | None:
    """Why the build in ``directory`` must not be used, or None if it matches."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no compiled build in {directory}"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest in {directory}: {exc}"
    if manifest.get("python") != cache_tag():
        return f"built for {manifest.get('python')}, this is {cache_tag()}"
    sources = manifest.get("sources", {})
    if sorted(sources) != sorted(MODULES):
        return f"built from {sorted(sources)}, not {sorted(MODULES)}"
    for module in MODULES:
        if sources[module] != digest(source(module)):
            return f"{source(module).relative_to(REPO_ROOT)} changed since the build"
    return None


def activate() -> bool:
    """Use the compiled modules if a matching build exists; returns whether it does.

    Must run before any of ``MODULES`` is imported (``simulations/__init__`` calls it):
    a module already imported stays the pure-Python one, which is correct, only slower.
    """
    global status
    directory = build_dir()
    if directory is None:
        status = f"off ({ENV}=0)"
        return False
    reason = stale_reason(directory)
    if reason is not None:
        status = reason
        return False
    # mypyc's shared runtime library is a top-level module of the build.
    if str(directory) not in sys.path:
        sys.path.append(str(directory))
    for package_name in {module.rpartition(".")[0] for module in MODULES}:
        package = importlib.import_module(package_name)
        package_dir = str(directory.joinpath(*package_name.split(".")))
        if package_dir not in package.__path__:
            package.__path__.insert(0, package_dir)
    status = f"compiled ({directory})"
    return True
