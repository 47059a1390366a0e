"""scheduler/core stays sans-IO: no I/O, clock or global randomness, no service imports.

``import random`` is allowed for the ``random.Random`` type that callers pass in; any other
use of the module (``random.random()``, ``random.choice``, ``from random import shuffle``)
would draw from the hidden global generator and break reproducible simulations.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[3] / "scheduler" / "core"
FORBIDDEN_MODULES = {
    "asyncio",
    "aiohttp",
    "redis",
    "prometheus_client",
    "time",
    "datetime",
    "os",
    "socket",
    "threading",
    "subprocess",
    "secrets",
    "uuid",
}
# The core may import the standard library and itself, not the rest of the project.
PROJECT_PACKAGES = {"scheduler", "peer", "registry_proxy", "simulations"}


def violations(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
            if node.module == "random":
                found += [f"from random import {a.name}" for a in node.names if a.name != "Random"]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            found.append(f"random.{node.attr}")
            continue
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            outside_core = top in PROJECT_PACKAGES and not name.startswith("scheduler.core")
            if top in FORBIDDEN_MODULES or outside_core:
                found.append(f"import {name}")
    return found


CORE_FILES = sorted(CORE.glob("*.py"))


def test_the_core_has_modules_to_check() -> None:
    assert len(CORE_FILES) >= 10


@pytest.mark.parametrize("path", CORE_FILES, ids=[p.name for p in CORE_FILES])
def test_core_module_is_pure(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import random\ndef f(rng: random.Random) -> None: ...", []),
        ("from random import Random", []),
        ("import random\nx = random.random()", ["random.random"]),
        ("import random\nrandom.shuffle([])", ["random.shuffle"]),
        ("from random import choice", ["from random import choice"]),
        ("import time", ["import time"]),
        ("from asyncio import Queue", ["import asyncio"]),
        ("import os.path", ["import os.path"]),
        ("from prometheus_client import Counter", ["import prometheus_client"]),
        ("import socket", ["import socket"]),
        ("from peer.pieces import PieceLayout", ["import peer.pieces"]),
        ("from scheduler.service import app", ["import scheduler.service"]),
        ("from scheduler.core.model import Peer", []),
        ("import math, collections", []),
    ],
)
def test_the_checker_catches_what_it_should(source: str, expected: list[str]) -> None:
    assert violations(source) == expected
