"""Same events and same seed give the same decisions; the seed is the only randomness."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from scheduler.core import Decision, SchedulerSettings
from tests.unit.scheduler.swarm import PIECES, Swarm


def _run(seed: int) -> list[Decision]:
    swarm = Swarm(SchedulerSettings(candidate_sample_size=5), seed=seed)
    shape = random.Random(99)  # the cluster is the same for every seed
    swarm.peer("seed", seed=True, idc="dc1", rack="r1")
    for i in range(60):
        swarm.peer(
            f"p{i}",
            pieces=shape.sample(range(PIECES), shape.randrange(0, PIECES)),
            idc=f"dc{i % 2}",
            rack=f"r{i % 4}",
            location=f"cn|bj|{i % 3}",
            upload_slots=shape.randrange(1, 4),
        )
    decisions: list[Decision] = [swarm.schedule("seed")]
    for round_number in range(3):
        swarm.now = float(round_number)
        for i in range(60):
            if not swarm.state.peers[f"p{i}"].is_complete:
                decisions.append(swarm.schedule(f"p{i}"))
    return decisions


def test_same_seed_same_decisions() -> None:
    assert _run(seed=1) == _run(seed=1)


def test_the_seed_matters() -> None:
    assert _run(seed=1) != _run(seed=2)


def test_decisions_do_not_depend_on_string_hashing() -> None:
    """Set iteration order changes with PYTHONHASHSEED; no decision may depend on it."""
    root = Path(__file__).resolve().parents[3]
    script = (
        "import hashlib\n"
        "from tests.unit.scheduler.test_sched_determinism import _run\n"
        "print(hashlib.sha256(repr(_run(1)).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        digests.add(result.stdout.strip())
    assert len(digests) == 1
