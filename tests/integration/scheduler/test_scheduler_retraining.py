"""Scheduled retraining on a real redis-server: records in the stream built so the outcome
is known (tests/unit/scheduler/synthetic_records.py), a current model published, and a
scheduler that retrains in a child process and promotes only a better candidate."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from scheduler.learning.artifact import (
    MODEL_ARTIFACT,
    load_model,
    model_bytes,
    parse_model,
    save_model,
)
from scheduler.service.records import FileRecordStore
from scheduler.service.redis_store import RedisArtifactStore, RedisRecordStore, data_client
from tests.integration.scheduler.conftest import SchedulerClient, SchedulerFactory, eventually
from tests.support.redis import RedisProcess
from tests.unit.scheduler.synthetic_records import DOWN, UP, model_of, records

pytestmark = pytest.mark.timeout(180)

PREFIX = "starling:"
# Rounds run in a child process that imports scikit-learn: seconds on a busy machine.
ROUND_TIMEOUT_S = 90


@pytest.fixture
async def redis_client(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = data_client(redis_server.url, 5.0)
    yield client
    await client.aclose()


async def _prepare(client: aioredis.Redis, rows: list[dict[str, Any]], slope: float) -> str:
    """Records into the stream and a current model fitted on ``slope`` published;
    the current model's version."""
    await RedisRecordStore(client, PREFIX, max_len=100_000).append(rows)
    current = model_of(slope)
    await RedisArtifactStore(client, PREFIX).put(MODEL_ARTIFACT, model_bytes(current))
    return current.version


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in the metrics"
    return float(match.group(1))


def _rounds(metrics: str, result: str) -> float:
    return _sample(metrics, "p2p_scheduler_retrains_total", result=result)


async def _scheduler(make_scheduler: SchedulerFactory, redis: RedisProcess, **extra: Any) -> Any:
    return await make_scheduler(
        redis_url=redis.url,
        evaluator="learned",
        model_reload_s=0.1,
        retrain_interval_s=0.5,
        **extra,
    )


async def _published(client: aioredis.Redis) -> str:
    data = await RedisArtifactStore(client, PREFIX).get(MODEL_ARTIFACT)
    assert data is not None
    return parse_model(data, "test").version


async def test_a_better_candidate_is_promoted_and_served(
    redis_server: RedisProcess, redis_client: aioredis.Redis, make_scheduler: SchedulerFactory
) -> None:
    # Every record follows UP; the current model was fitted on DOWN: the candidate wins.
    current = await _prepare(redis_client, records(800, UP), DOWN)
    scheduler = await _scheduler(make_scheduler, redis_server)
    assert _versions(await scheduler.metrics()) == {current: 1.0}

    async def promoted() -> bool:
        return _rounds(await scheduler.metrics(), "promoted") >= 1

    await eventually(promoted, ROUND_TIMEOUT_S, "a promotion")
    published = await _published(redis_client)
    assert published != current
    await eventually(
        lambda: _serves(scheduler, published), 10, "the scheduler to serve the promoted model"
    )
    # The scores of the round that promoted it travel with the model.
    data = await RedisArtifactStore(redis_client, PREFIX).get(MODEL_ARTIFACT)
    assert data is not None
    metrics = parse_model(data, "test").metadata["metrics"]
    assert metrics["split_by"] == "time" and metrics["compared_with"]["version"] == current
    assert metrics["held_out"]["rmse"] < 0.3 < 1.5 < metrics["compared_with"]["held_out_rmse"]
    assert metrics["held_out"]["records"] == 200 and metrics["train"]["records"] == 600
    text = await scheduler.metrics()
    assert _sample(text, "p2p_scheduler_retrain_held_out_rmse", model="candidate") < 0.3
    assert _sample(text, "p2p_scheduler_retrain_duration_seconds") > 0


async def test_a_worse_candidate_is_rejected_and_the_current_model_stays(
    redis_server: RedisProcess, redis_client: aioredis.Redis, make_scheduler: SchedulerFactory
) -> None:
    # The newest quarter (held out) follows DOWN like the current model; the older records
    # the candidate is fitted on follow UP: the current model wins.
    rows = records(600, UP) + records(200, DOWN, first=600)
    current = await _prepare(redis_client, rows, DOWN)
    scheduler = await _scheduler(make_scheduler, redis_server)

    async def rejected() -> bool:
        return _rounds(await scheduler.metrics(), "rejected") >= 1

    await eventually(rejected, ROUND_TIMEOUT_S, "a rejection")
    text = await scheduler.metrics()
    assert _rounds(text, "promoted") == 0
    assert (
        _sample(text, "p2p_scheduler_retrain_held_out_rmse", model="current")
        < 0.3
        < 1.5
        < _sample(text, "p2p_scheduler_retrain_held_out_rmse", model="candidate")
    )
    assert await _published(redis_client) == current
    assert _versions(text) == {current: 1.0}


async def test_one_replica_retrains_at_a_time(
    redis_server: RedisProcess, make_scheduler: SchedulerFactory
) -> None:
    # No records: every attempted round fails at once (too few records), which is enough
    # to see who attempts. The lease lasts a round's interval and is renewed while the
    # round runs, so the replica that does not hold it skips.
    replicas = [
        await make_scheduler(redis_url=redis_server.url, retrain_interval_s=2.0) for _ in range(2)
    ]

    async def attempts(replica: SchedulerClient) -> float:
        text = await replica.metrics()
        return sum(_rounds(text, result) for result in ("promoted", "rejected", "failed"))

    async def some_attempt() -> bool:
        return sum([await attempts(r) for r in replicas]) >= 1

    await eventually(some_attempt, ROUND_TIMEOUT_S, "a retraining round")
    counts = [await attempts(r) for r in replicas]
    skipped = [_rounds(await r.metrics(), "skipped") for r in replicas]
    winner = counts.index(max(counts))
    assert counts[1 - winner] == 0
    assert skipped[1 - winner] >= 1


async def test_without_redis_records_from_files_and_promotion_to_model_path(
    make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    records_dir, model_path = tmp_path / "records", tmp_path / "model.json"
    await FileRecordStore(records_dir).append(records(800, UP))
    save_model(model_of(DOWN), model_path)
    scheduler = await make_scheduler(
        evaluator="learned",
        model_path=str(model_path),
        model_reload_s=0.1,
        records_dir=str(records_dir),
        retrain_interval_s=0.5,
    )
    assert _versions(await scheduler.metrics()) == {model_of(DOWN).version: 1.0}

    async def promoted() -> bool:
        return _rounds(await scheduler.metrics(), "promoted") >= 1

    await eventually(promoted, ROUND_TIMEOUT_S, "a promotion")
    published = load_model(model_path)
    assert published.metadata["metrics"]["compared_with"]["version"] == model_of(DOWN).version
    await eventually(lambda: _serves(scheduler, published.version), 10, "the scheduler to serve it")


def _versions(metrics: str) -> dict[str, float]:
    found = re.findall(
        r'p2p_scheduler_model_info\{feature_version="[^"]*",version="([^"]+)"\} (\S+)', metrics
    )
    return {version: float(value) for version, value in found}


async def _serves(client: SchedulerClient, version: str) -> bool:
    return _versions(await client.metrics()) == {version: 1.0}


def test_retraining_needs_records_and_a_place_to_publish(tmp_path: Path) -> None:
    from scheduler.service.config import SchedulerConfig
    from scheduler.service.errors import ConfigError

    with pytest.raises(ConfigError, match="needs records"):
        SchedulerConfig(retrain_interval_s=60.0, model_path=str(tmp_path / "m.json"))
    with pytest.raises(ConfigError, match="publish"):
        SchedulerConfig(retrain_interval_s=60.0, records_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="needs records"):
        SchedulerConfig(
            retrain_interval_s=60.0, redis_url="redis://127.0.0.1:1/0", records_redis_max_len=0
        )
    SchedulerConfig(retrain_interval_s=60.0, redis_url="redis://127.0.0.1:1/0")
    SchedulerConfig(
        retrain_interval_s=60.0, records_dir=str(tmp_path), model_path=str(tmp_path / "m.json")
    )
