"""Hosts that stop announcing expire after host_ttl_s, and their peers go with them."""

from __future__ import annotations

import pytest

from tests.integration.scheduler.conftest import SchedulerFactory, eventually

pytestmark = pytest.mark.timeout(60)


async def test_a_silent_host_expires_and_an_announcing_one_stays(
    make_scheduler: SchedulerFactory,
) -> None:
    client = await make_scheduler(host_ttl_s=0.3, upkeep_interval_s=0.02)
    assert await client.announce("alive") == {"host_ttl_s": 0.3, "new_host": True}
    await client.announce("silent")
    await client.register("p-silent", "silent")
    await client.register("p-alive", "alive")
    assert (await client.health())["hosts"] == 2

    async def only_the_announcing_host_left() -> bool:
        # Every poll is also a heartbeat of "alive", well within its TTL.
        await client.announce("alive")
        health = await client.health()
        return health["hosts"] == 1

    await eventually(only_the_announcing_host_left, timeout_s=10, what="the silent host to expire")
    assert await client.health() == {"status": "ok", "hosts": 1, "peers": 1, "tasks": 1}
    status, answer = await client.call("POST", "/api/v1/peers/p-silent/schedule", {})
    assert status == 404
    assert "p-silent" in answer["error"]
    status, _ = await client.call("POST", "/api/v1/peers/p-alive/schedule", {})
    assert status == 200
    # An expired host comes back by announcing again; its peers must register again.
    await client.announce("silent")
    await client.register("p-silent", "silent")
    assert 'p2p_scheduler_events_total{type="host_expired"} 1.0' in await client.metrics()


async def test_deleting_a_host_removes_it_at_once(make_scheduler: SchedulerFactory) -> None:
    client = await make_scheduler()
    await client.announce("h1")
    await client.register("p1", "h1")
    assert await client.ok("DELETE", "/api/v1/hosts/h1") == {}
    assert await client.health() == {"status": "ok", "hosts": 0, "peers": 0, "tasks": 0}
