"""Smoke check at simulator scale: thousands of peers in one task, no errors, sane answers.

Speed is measured by benchmarks, not asserted here.
"""

from __future__ import annotations

import random

from scheduler.core import BackToSource, Parents, PieceReport, PiecesReported, SchedulerSettings
from tests.unit.scheduler.swarm import PIECE_BYTES, MiB, Swarm, check_invariants

PEERS = 2000
PIECE_COUNT = 64


def test_two_thousand_peers_in_one_task() -> None:
    swarm = Swarm(SchedulerSettings(back_to_source_after_retries=None), seed=3)
    shape = random.Random(5)
    swarm.peer("seed", seed=True, idc="dc0", rack="r0", piece_count=PIECE_COUNT)
    assert isinstance(swarm.schedule("seed"), BackToSource)
    swarm.report("seed", None, range(PIECE_COUNT))
    for i in range(PEERS):
        swarm.peer(
            f"p{i}",
            idc=f"dc{i % 4}",
            rack=f"r{i % 40}",
            location=f"eu|de|{i % 4}",
            upload_capacity_bps=shape.choice([10, 100, 1000]) * MiB,
            upload_slots=8,
            piece_count=PIECE_COUNT,
        )
    # Rounds of: everybody asks, then fetches one piece it lacks from its best parent.
    for round_number in range(1, 6):
        swarm.now = float(round_number)
        got_parents = 0
        for i in range(PEERS):
            name = f"p{i}"
            child = swarm.state.peers[name]
            if child.is_complete:
                continue
            decision = swarm.schedule(name)
            if not isinstance(decision, Parents):
                continue
            got_parents += 1
            best = swarm.state.peers[decision.parents[0].peer_id]
            wanted = best.pieces_mask & ~child.pieces_mask
            index = shape.choice([i for i in range(PIECE_COUNT) if wanted >> i & 1])
            swarm.state.report_pieces(
                _one_piece(name, best.peer_id, index, shape.uniform(0.05, 0.5)), swarm.now
            )
        assert got_parents > 0
    task = swarm.state.peers["seed"].task
    assert len(task.holders) > PEERS // 2  # the swarm spread pieces beyond the seed
    assert task.normal_back_to_source_count == 0  # the seed had everything
    check_invariants(swarm.state)


def _one_piece(child: str, parent: str, index: int, cost_s: float) -> PiecesReported:
    return PiecesReported(child, (PieceReport(index, parent, PIECE_BYTES, cost_s),))
