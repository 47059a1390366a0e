"""Transfer records in Redis: the stores on a real redis-server, a scheduler writing its
records to the stream, ``p2pctl model train --redis-url`` reading them back, and a Redis
outage that costs records but never a decision."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ctl.cli import main as p2pctl
from scheduler.learning.artifact import load_model
from scheduler.service import redis_store
from scheduler.service.redis_store import (
    RedisArtifactStore,
    RedisLease,
    RedisRecordStore,
    data_client,
)
from tests.integration.scheduler.conftest import (
    PIECE_BYTES,
    TASK,
    SchedulerClient,
    SchedulerFactory,
    eventually,
    report,
)
from tests.support.redis import RedisProcess

pytestmark = pytest.mark.timeout(120)

PREFIX = "starling:"
STREAM = f"{PREFIX}records"


@pytest.fixture
async def client(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = data_client(redis_server.url, 5.0)
    yield client
    await client.aclose()


async def test_the_stream_keeps_the_newest_records_in_order_and_stays_capped(
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisRecordStore(client, PREFIX, max_len=100)
    assert await store.read(10) == []
    await store.append([{"n": 0}, {"n": 1}])
    await store.append([{"n": 2}])
    assert await store.read(10) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert await store.read(2) == [{"n": 1}, {"n": 2}]
    # 3,000 more in batches: the approximate cap trims whole stream nodes (100 entries
    # each by default), so the stream stays near 100 entries, never near 3,000.
    for start in range(3, 3003, 500):
        await store.append([{"n": n} for n in range(start, start + 500)])
    assert 100 <= await store.length() <= 300
    newest = await store.read(250)
    assert [r["n"] for r in newest] == list(range(3003 - len(newest), 3003))
    # Read in pages of 3 entries, backwards, across page boundaries: the same records.
    monkeypatch.setattr(redis_store, "_READ_PAGE", 3)
    assert await store.read(7) == newest[-7:]
    assert await store.read(250) == newest


async def test_artifacts_are_replaced_whole_and_stamped(client: aioredis.Redis) -> None:
    store = RedisArtifactStore(client, PREFIX)
    assert await store.get("model") is None and await store.stamp("model") is None
    await store.put("model", b"v1")
    first = await store.stamp("model")
    await store.put("model", b"version 2")
    assert await store.get("model") == b"version 2"
    assert first is not None and await store.stamp("model") not in (None, first)
    assert await client.keys(f"{PREFIX}artifact:*") == [f"{PREFIX}artifact:model".encode()]
    with pytest.raises(ValueError):
        await store.put("../escape", b"x")


async def test_one_lease_holder_at_a_time(client: aioredis.Redis) -> None:
    key = f"{PREFIX}retrain:lease"
    first, second = RedisLease(client, key, "a"), RedisLease(client, key, "b")
    assert await first.acquire(0.3)
    assert not await second.acquire(0.3)
    assert not await second.renew(5.0)  # only the holder renews
    assert await first.renew(0.3)

    async def second_gets_it() -> bool:
        return await second.acquire(5.0)

    await eventually(second_gets_it, 5, "the lease to expire")
    assert not await first.renew(5.0)  # it expired and is the other's now


async def _stream(redis: RedisProcess) -> list[dict[str, object]]:
    client = data_client(redis.url, 5.0)
    try:
        return await RedisRecordStore(client, PREFIX, max_len=1).read(100_000)
    finally:
        await client.aclose()


async def _swarm(client: SchedulerClient, children: int, pieces: int) -> None:
    """A seed holding ``pieces`` pieces and ``children`` peers (one host each) given it."""
    await client.announce("seed-host")
    for i in range(children):
        await client.announce(f"h{i}")
    for peer, host, have in [("seed", "seed-host", list(range(pieces)))] + [
        (f"c{i}", f"h{i}", []) for i in range(children)
    ]:
        body = {
            "peer_id": peer,
            "task_id": TASK,
            "host_id": host,
            "size_bytes": pieces * PIECE_BYTES,
            "piece_bytes": PIECE_BYTES,
            "pieces": have,
        }
        await client.ok("POST", "/api/v1/peers", body)
    for i in range(children):
        answer = await client.schedule(f"c{i}")
        assert [p["peer_id"] for p in answer["parents"]] == ["seed"]


async def test_a_schedulers_records_land_in_the_stream_and_train_a_model(
    redis_server: RedisProcess, make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    client = await make_scheduler(
        redis_url=redis_server.url, records_cluster="lab", records_flush_s=0.05
    )
    children, pieces = 4, 60
    await _swarm(client, children, pieces)
    for i in range(children):
        # Child i gets pieces at its own speed, so the model has something to learn.
        reports = [report(n, "seed", cost_s=0.01 * (i + 1) * (1 + n % 3)) for n in range(pieces)]
        status, _ = await client.report(f"c{i}", *reports)
        assert status == 200

    async def all_in_redis() -> bool:
        return len(await _stream(redis_server)) == children * pieces

    await eventually(all_in_redis, 10, "every record in the Redis stream")
    stream = await _stream(redis_server)
    assert {(r["cluster"], r["parent_host"]) for r in stream} == {("lab", "seed-host")}
    assert sorted({str(r["child_host"]) for r in stream}) == [f"h{i}" for i in range(children)]
    written = 'p2p_scheduler_transfer_records_total{outcome="written",store="redis"} 240.0'
    text = await client.metrics()
    assert written in text
    assert 'store="file"' not in text  # no records_dir: no files

    out = tmp_path / "model.json"
    args = ["model", "train", "--redis-url", redis_server.url, "--out", str(out)]
    assert await asyncio.to_thread(p2pctl, args) == 0
    metrics = load_model(out).metadata["metrics"]
    assert metrics["train"]["records"] + metrics["held_out"]["records"] == children * pieces
    assert metrics["train"]["clusters"] == ["lab"] and metrics["split_by"] == "hosts"


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in the metrics"
    return float(match.group(1))


async def test_redis_down_scheduling_goes_on_and_records_are_dropped_then_resumed(
    redis_server: RedisProcess, make_scheduler: SchedulerFactory
) -> None:
    client = await make_scheduler(
        redis_url=redis_server.url,
        records_flush_s=0.05,
        records_backlog_max=5,
        evaluator="learned",
        model_reload_s=0.05,
    )
    await _swarm(client, 2, 40)
    status, _ = await client.report("c0", report(0, "seed"))
    assert status == 200
    await eventually(
        lambda: _has_stream_length(redis_server, 1), 10, "the first record in the stream"
    )

    redis_server.kill()
    # Decisions, reports and announcements answer at once while Redis is gone.
    for n in range(1, 21):
        started = time.monotonic()
        status, _ = await client.report("c0", report(n, "seed"))
        assert status == 200
        answer = await client.schedule("c1")
        assert "seed" in [p["peer_id"] for p in answer["parents"]]
        await client.announce("h1")
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.01)

    async def dropped() -> bool:
        text = await client.metrics()
        return (
            _sample(text, "p2p_scheduler_transfer_records_total", outcome="dropped", store="redis")
            == 15
        )

    await eventually(dropped, 10, "the records beyond the backlog to be counted as dropped")
    text = await client.metrics()
    assert _sample(text, "p2p_scheduler_transfer_records_backlog", store="redis") == 5
    assert (await client.health())["status"] == "ok"

    # Redis back (empty, on the same port): the backlog (the 5 newest) is written.
    redis_server.start()
    await eventually(
        lambda: _has_stream_length(redis_server, 5), 10, "the backlog written to Redis"
    )
    assert [r["piece_index"] for r in await _stream(redis_server)] == list(range(16, 21))
    text = await client.metrics()
    assert _sample(text, "p2p_scheduler_transfer_records_backlog", store="redis") == 0
    assert (
        _sample(text, "p2p_scheduler_transfer_records_total", outcome="written", store="redis") == 6
    )


async def _has_stream_length(redis: RedisProcess, length: int) -> bool:
    return len(await _stream(redis)) == length
