"""Scheduler replicas on a real redis-server: heartbeats, expiry, a Redis restart.

The replicas are real scheduler apps on loopback ports; Redis is a real ``redis-server``.
Ages and TTLs are short (a heartbeat every 0.1 s, listed for 0.6 s) so expiry is quick.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from openapi_schema_validator import OAS31Validator

from scheduler.service.app import REPLICAS_KEY, create_app
from scheduler.service.config import SchedulerConfig
from scheduler.service.openapi import DOCUMENT
from scheduler.service.redis_store import RedisReplicaStore
from tests.integration.scheduler.conftest import TOKEN, eventually
from tests.support.redis import RedisProcess

pytestmark = pytest.mark.timeout(60)

HEARTBEAT_S = 0.1
TTL_S = 0.6


async def _members(redis: RedisProcess) -> set[str]:
    """The replicas registered in Redis, read directly."""
    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        return set(await client.zrange("starling:replicas", 0, -1))
    finally:
        await client.aclose()


class Replica:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def replicas(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.session.get(f"{self.url}/api/v1/replicas", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
        OAS31Validator(
            {"$ref": "#/components/schemas/Replicas", "components": DOCUMENT["components"]}
        ).validate(answer)
        return answer

    async def urls(self) -> list[str]:
        return [r["url"] for r in (await self.replicas())["replicas"]]

    async def store_up(self) -> float | None:
        """``p2p_scheduler_store_up`` from /metrics; None when it is not exported."""
        async with self.session.get(f"{self.url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith("p2p_scheduler_store_up "):
                return float(line.split()[1])
        return None

    async def stop(self) -> None:
        await self.server.close()


Factory = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def start_replica() -> AsyncIterator[Factory]:
    started: list[Replica] = []
    session = aiohttp.ClientSession()

    async def start(redis: RedisProcess | None, **settings: Any) -> Replica:
        config = SchedulerConfig(
            token=TOKEN,
            redis_url=redis.url if redis is not None else None,
            replica_heartbeat_s=HEARTBEAT_S,
            replica_ttl_s=TTL_S,
            **settings,
        )
        app = create_app(config)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        replica = Replica(server, session)
        # What p2p-scheduler does once its port is bound.
        await app[REPLICAS_KEY].start(replica.url)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.stop()
    await session.close()


async def test_without_redis_a_scheduler_lists_itself_as_static(start_replica: Factory) -> None:
    replica = await start_replica(None)
    answer = await replica.replicas()
    assert answer == {
        "membership": "static",
        "self": replica.url,
        "store": "none",
        "replicas": [{"url": replica.url, "heartbeat_age_s": 0.0}],
    }
    # Alone is not "Redis unreachable": the gauge the alert watches is not there at all.
    assert await replica.store_up() is None


async def test_replicas_find_each_other_and_a_clean_stop_leaves_at_once(
    redis_server: RedisProcess, start_replica: Factory
) -> None:
    first = await start_replica(redis_server)
    second = await start_replica(redis_server)
    both = sorted([first.url, second.url])

    async def both_listed() -> bool:
        return await first.urls() == both and await second.urls() == both

    await eventually(both_listed, 5, "both replicas in each other's list")
    answer = await first.replicas()
    assert answer["membership"] == "redis" and answer["store"] == "reachable"
    assert answer["self"] == first.url

    await second.stop()
    # Gone from Redis at once, not a TTL later.
    assert await _members(redis_server) == {first.url}

    async def alone() -> bool:
        return await first.urls() == [first.url]

    await eventually(alone, 5, "the stopped replica to leave the list")


async def test_a_replica_that_stops_heartbeating_expires(
    redis_server: RedisProcess, start_replica: Factory
) -> None:
    live = await start_replica(redis_server)
    # A replica that heartbeat once and died (SIGKILL): nobody removes it, it expires.
    dead = "http://127.0.0.1:9"
    store = RedisReplicaStore(redis_server.url, "starling:", 1.0)
    try:
        await store.heartbeat(dead, 3600)
    finally:
        await store.close()

    async def listed() -> bool:
        return dead in await live.urls()

    await eventually(listed, 5, "the dead replica's one heartbeat to be seen")

    async def expired() -> bool:
        return await live.urls() == [live.url]

    await eventually(expired, TTL_S + 5, "the silent replica to expire")


async def test_a_redis_restart_keeps_the_list_and_the_replicas_register_again(
    redis_server: RedisProcess, start_replica: Factory
) -> None:
    first = await start_replica(redis_server)
    second = await start_replica(redis_server)
    both = sorted([first.url, second.url])

    async def both_listed() -> bool:
        return await first.urls() == both

    await eventually(both_listed, 5, "both replicas listed")
    assert await first.store_up() == 1.0

    redis_server.kill()

    async def store_unreachable() -> bool:
        return (await first.replicas())["store"] == "unreachable"

    await eventually(store_unreachable, 5, "the replica to notice Redis is gone")
    assert await first.store_up() == 0.0

    async def long_silence() -> bool:
        ages = {r["url"]: r["heartbeat_age_s"] for r in (await first.replicas())["replicas"]}
        return ages.get(second.url, 0.0) > 3 * TTL_S

    await eventually(long_silence, 10, "three TTLs without a heartbeat read from Redis")
    # Several TTLs without Redis: the list is frozen, not shrunk to "just me".
    for replica in (first, second):
        answer = await replica.replicas()
        assert [r["url"] for r in answer["replicas"]] == both, answer

    redis_server.start()  # empty: no persistence

    async def registered_again() -> bool:
        return await _members(redis_server) == {first.url, second.url}

    await eventually(registered_again, 5, "both replicas to heartbeat into the new Redis")
    answer = await first.replicas()
    assert answer["store"] == "reachable"
    assert [r["url"] for r in answer["replicas"]] == both
    assert await first.store_up() == 1.0
