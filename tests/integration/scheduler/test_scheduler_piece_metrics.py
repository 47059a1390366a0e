"""Piece costs, bytes by source and parent evictions on the scheduler's /metrics."""

from __future__ import annotations

import pytest

from scheduler.core import FilterReason
from tests.integration.scheduler.conftest import (
    PIECE_BYTES,
    PIECES,
    SchedulerClient,
    drive_traffic,
    piece_digest,
    report,
)
from tests.integration.scheduler.test_scheduler_metrics import sample

pytestmark = pytest.mark.timeout(60)


async def test_piece_costs_bytes_and_evictions_after_traffic(
    traffic_scheduler: SchedulerClient,
) -> None:
    await drive_traffic(traffic_scheduler)
    text = await traffic_scheduler.metrics()
    # The seed's origin pieces, then p1's one good piece from the seed; p3's contradicting
    # batch was refused whole and counts nowhere.
    assert sample(text, "p2p_scheduler_piece_bytes_total", source="origin") == PIECES * PIECE_BYTES
    assert sample(text, "p2p_scheduler_piece_bytes_total", source="seed") == PIECE_BYTES
    assert sample(text, "p2p_scheduler_piece_bytes_total", source="peer") == 0
    assert sample(text, "p2p_scheduler_piece_cost_seconds_count", source="origin") == PIECES
    assert sample(text, "p2p_scheduler_piece_cost_seconds_count", source="seed") == 1
    # p1's failed piece blocked the seed for it; p3 gave up on the seed itself.
    assert sample(text, "p2p_scheduler_parent_evictions_total", reason="failed_piece") == 1
    assert sample(text, "p2p_scheduler_parent_evictions_total", reason="reported_by_child") == 1
    assert sample(text, "p2p_scheduler_parent_evictions_total", reason="slow_piece") == 0
    # Every filter reason is there from the start, at zero if it never happened.
    for reason in FilterReason:
        assert f'p2p_scheduler_candidates_filtered_total{{reason="{reason}"}}' in text


async def test_a_piece_cost_outlier_evicts_a_bad_parent(scheduler: SchedulerClient) -> None:
    await scheduler.announce("h-seed", is_seed=True)
    await scheduler.announce("h1")
    await scheduler.register("seed", "h-seed")
    await scheduler.register("p1", "h1")
    origin = [report(i, None, digest=piece_digest(i)) for i in range(PIECES)]
    assert (await scheduler.report("seed", *origin))[0] == 200
    await scheduler.schedule("p1")
    # Fast pieces from the seed, then one a hundred times slower: an outlier.
    fast = [report(i, "seed", digest=piece_digest(i), cost_s=0.01) for i in (0, 1)]
    assert (await scheduler.report("p1", *fast))[0] == 200
    slow = report(2, "seed", digest=piece_digest(2), cost_s=1.0)
    assert (await scheduler.report("p1", slow))[0] == 200
    text = await scheduler.metrics()
    assert sample(text, "p2p_scheduler_parent_evictions_total", reason="slow_piece") == 1
    assert sample(text, "p2p_scheduler_parent_evictions_total", reason="failed_piece") == 0
    assert sample(text, "p2p_scheduler_piece_cost_seconds_bucket", source="seed", le="0.01") == 2
    assert sample(text, "p2p_scheduler_piece_bytes_total", source="seed") == 3 * PIECE_BYTES
