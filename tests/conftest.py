"""Shared fixtures over real components: registry, token server, counting proxy, containerd.

The fixtures are thin: the logic lives in ``tests/support`` so the benchmark can reuse it.
Each fixture is function-scoped (every one starts in well under a second) and tears down
completely: processes stopped, temp dirs removed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests` has no __init__.py, so pytest puts tests/ (not the repo root) on sys.path. Adding
# the root makes `tests.support` importable the same way here, in test modules and in the
# benchmark.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

# The tests check p2psim's pure-Python modules, the reference; a compiled build in
# build/sim-accel would otherwise replace them (tests/unit/simulations/test_sim_accel.py
# checks that build against them). Before anything imports `simulations`.
os.environ.setdefault("STARLING_SIM_ACCEL", "0")

from tests.support.containerd import (  # noqa: E402
    ContainerdProcess,
    containerd_unavailable_reason,
)
from tests.support.counting_proxy import CountingProxy  # noqa: E402
from tests.support.redis import RedisProcess, redis_unavailable_reason  # noqa: E402
from tests.support.registry import (  # noqa: E402
    RegistryProcess,
    TokenRegistry,
    registry_unavailable_reason,
    start_token_registry,
)
from tests.support.requirements import require  # noqa: E402


def _require_registry() -> None:
    require(registry_unavailable_reason())


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    """A plain-http distribution registry with empty storage."""
    _require_registry()
    process = RegistryProcess(tmp_path / "registry")
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A real redis-server on a free loopback port, without persistence."""
    require(redis_unavailable_reason())
    process = RedisProcess(tmp_path / "redis")
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def counting_proxy(registry: RegistryProcess) -> Iterator[CountingProxy]:
    """A counting, fault-injecting reverse proxy in front of ``registry``."""
    with CountingProxy(registry.url) as proxy:
        yield proxy


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[TokenRegistry]:
    """A registry behind token auth; ``.auth`` is the one (user, password) it accepts."""
    _require_registry()
    instance = start_token_registry(tmp_path / "token-registry")
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[ContainerdProcess]:
    """A private containerd daemon; each namespace has its own content (isolated policy)."""
    require(containerd_unavailable_reason())
    process = ContainerdProcess(tmp_path / "containerd")
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def tmp_hosts_dir(tmp_path: Path) -> Path:
    """An empty directory for ``write_hosts_toml`` and ``ctr --hosts-dir``."""
    hosts_dir = tmp_path / "hosts.d"
    hosts_dir.mkdir()
    return hosts_dir
