"""A congested rack, as an operator and a peer see it through the scheduler's HTTP API."""

from __future__ import annotations

import pytest

from scheduler.core import SchedulerSettings
from tests.integration.scheduler.conftest import PIECES, SchedulerFactory, report
from tests.integration.scheduler.test_scheduler_metrics import sample

pytestmark = pytest.mark.timeout(60)


async def test_slow_pieces_from_another_rack_keep_the_racks_parents_inside(
    make_scheduler: SchedulerFactory,
) -> None:
    client = await make_scheduler(scheduling=SchedulerSettings(rack_congestion_samples=3))
    await client.announce("h-far", idc="dc1", rack="r2")
    for name in ("mate", "helper", "child"):
        await client.announce(f"h-{name}", idc="dc1", rack="r1")
    await client.register("far", "h-far", pieces=list(range(PIECES)))
    for name in ("mate", "helper", "child"):
        await client.register(name, f"h-{name}")
    assert sample(await client.metrics(), "p2p_scheduler_congested_racks") == 0

    # Pieces from rack r2 took 2 s each, pieces from a rack-mate 0.1 s.
    slow = [report(i, "far", cost_s=2.0) for i in range(PIECES)]
    assert (await client.report("mate", *slow))[0] == 200
    fast = [report(i, "mate", cost_s=0.1) for i in range(PIECES)]
    assert (await client.report("helper", *fast))[0] == 200

    text = await client.metrics()
    assert sample(text, "p2p_scheduler_congested_racks") == 1
    decision = await client.schedule("child")
    assert sorted(p["peer_id"] for p in decision["parents"]) == ["helper", "mate"]
    text = await client.metrics()
    assert sample(text, "p2p_scheduler_candidates_filtered_total", reason="other_rack") == 1
