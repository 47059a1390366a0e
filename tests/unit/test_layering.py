"""The sans-IO rule of DESIGN.md: pure modules import no I/O, clock or global randomness."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_MODULES = [
    "registry_proxy/errors.py",
    "registry_proxy/reference.py",
    "registry_proxy/ranges.py",
    "peer/pieces.py",
    "peer/cache.py",
    "peer/sizes.py",
    "peer/upload_slots.py",
    "peer/piece_picker.py",
    "peer/rendezvous.py",
    "peer/replica_view.py",
    "scheduler/service/membership.py",
    # Issue 5's core modules. numpy is allowed: it computes, it does no I/O.
    "scheduler/core/features.py",
    "scheduler/core/learned.py",
    "scheduler/core/transfers.py",
    "scheduler/core/tree_model.py",
    "scheduler/core/rack_flow.py",
]
FORBIDDEN = {"asyncio", "aiohttp", "redis", "prometheus_client", "time", "socket", "os"}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_do_no_io(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module} imports {imported & FORBIDDEN}"
    # Randomness comes in as a random.Random argument; the global generator is not used.
    global_random = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "random"
        and node.attr != "Random"
    ]
    assert not global_random, f"{module} uses the global random generator: {global_random}"


def test_cluster_tls_is_a_library_of_its_own() -> None:
    """peer, scheduler and ctl share cluster_tls; it must not import any of them."""
    daemons = {"peer", "scheduler", "ctl", "simulations", "registry_proxy"}
    for path in (ROOT / "cluster_tls").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not imported & daemons, f"{path.name} imports {imported & daemons}"
