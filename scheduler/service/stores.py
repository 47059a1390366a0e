"""The record and artifact stores a scheduler's config asks for.

The rule, from ``SchedulerConfig``:

- records go to the Redis stream whenever ``redis_url`` is set (capped at
  ``records_redis_max_len``; 0 keeps none in Redis), and to files whenever
  ``records_dir`` is set. Either, both or neither: a replica that keeps neither records
  nothing at all (the core's recorder is not even built);
- published models come from Redis whenever ``redis_url`` is set (the artifact
  ``model``), else from the file ``model_path``. Scheduled retraining publishes to the
  same place, so every replica picks its promotions up;
- scheduled retraining reads the records back from Redis when they go there, else from
  ``records_dir``.

One Redis client (``redis_store.data_client``) serves the records, the artifacts and
the retraining lease; the replica heartbeat keeps its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from scheduler.learning.artifact import MODEL_ARTIFACT
from scheduler.service.config import SchedulerConfig
from scheduler.service.records import ArtifactStore, FileArtifactStore, FileRecordStore, RecordStore
from scheduler.service.redis_store import (
    RedisArtifactStore,
    RedisLease,
    RedisRecordStore,
    data_client,
)

# Records and model artifacts are bigger than a heartbeat: a slower answer is still one.
DATA_TIMEOUT_S = 5.0


@dataclass
class Stores:
    # Where records are appended, by name ("file", "redis"): the metric's store label.
    records: dict[str, RecordStore] = field(default_factory=dict)
    # Where models are published and read back from: Redis artifacts, or None (the file
    # model_path, watched by ``models.ModelServing`` itself).
    published: ArtifactStore | None = None
    # Where retraining publishes a promoted model: (store, artifact name).
    publish_target: tuple[ArtifactStore, str] | None = None
    # Which replica retrains this interval; None without Redis.
    lease: RedisLease | None = None
    client: aioredis.Redis | None = None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def open_stores(config: SchedulerConfig) -> Stores:
    """The stores for ``config``; nothing connects until first used."""
    stores = Stores()
    if config.redis_url is not None:
        client = data_client(config.redis_url, DATA_TIMEOUT_S)
        stores.client = client
        if config.records_redis_max_len > 0:
            stores.records["redis"] = RedisRecordStore(
                client, config.redis_key_prefix, config.records_redis_max_len
            )
        artifacts = RedisArtifactStore(client, config.redis_key_prefix)
        stores.published = artifacts
        stores.publish_target = (artifacts, MODEL_ARTIFACT)
        stores.lease = RedisLease(
            client, f"{config.redis_key_prefix}retrain:lease", secrets.token_hex(8)
        )
    elif config.model_path is not None:
        path = Path(config.model_path)
        stores.publish_target = (FileArtifactStore(path.parent), path.name)
    if config.records_dir is not None:
        stores.records["file"] = FileRecordStore(config.records_dir)
    return stores
