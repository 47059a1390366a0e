"""Models published to Redis: every replica switches to them, a late replica starts with
them, a model the schedulers cannot serve is refused and the model in use stays."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path

import pytest

from ctl.cli import main as p2pctl
from scheduler.learning.artifact import default_model, load_model, save_model
from scheduler.service.config import ENV_REDIS_URL
from scheduler.service.redis_store import RedisArtifactStore, data_client
from tests.integration.scheduler.conftest import SchedulerClient, SchedulerFactory, eventually
from tests.support.redis import RedisProcess

pytestmark = pytest.mark.timeout(120)


def _versions(metrics: str) -> dict[str, float]:
    found = re.findall(
        r'p2p_scheduler_model_info\{feature_version="[^"]*",version="([^"]+)"\} (\S+)', metrics
    )
    return {version: float(value) for version, value in found}


async def _serves(client: SchedulerClient, version: str) -> bool:
    return _versions(await client.metrics()) == {version: 1.0}


async def _reloads(client: SchedulerClient, result: str) -> float:
    match = re.search(
        rf'p2p_scheduler_model_reloads_total\{{result="{result}"\}} (\S+)', await client.metrics()
    )
    assert match
    return float(match.group(1))


async def test_a_published_model_reaches_every_replica(
    redis_server: RedisProcess, make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    shipped = default_model()
    assert shipped is not None
    settings = {"redis_url": redis_server.url, "evaluator": "learned", "model_reload_s": 0.05}
    replicas = [await make_scheduler(**settings) for _ in range(2)]
    for replica in replicas:
        assert await _serves(replica, shipped.version)

    newer = replace(shipped, baseline=shipped.baseline + 1.0, metadata={"note": "retrained"})
    save_model(newer, tmp_path / "newer.json")
    version = load_model(tmp_path / "newer.json").version
    assert version != shipped.version
    args = ["model", "publish", str(tmp_path / "newer.json"), "--redis-url", redis_server.url]
    assert await asyncio.to_thread(p2pctl, args) == 0
    for replica in replicas:
        await eventually(lambda r=replica: _serves(r, version), 10, "the replica to switch")
        assert await _reloads(replica, "ok") == 1

    # A replica started now serves the published model from its first request on.
    late = await make_scheduler(**settings)
    assert await _serves(late, version)

    # A model of another feature set is refused by p2pctl, and Redis keeps the one it has.
    stale = replace(shipped, feature_version="starling-features-0")
    save_model(stale, tmp_path / "stale.json")
    stale_args = ["model", "publish", str(tmp_path / "stale.json"), "--redis-url", redis_server.url]
    assert await asyncio.to_thread(p2pctl, stale_args) == 1

    # Garbage written to the artifact directly: every replica refuses it, keeps its model.
    client = data_client(redis_server.url, 5.0)
    try:
        await RedisArtifactStore(client, "starling:").put("model", b"{not a model")
    finally:
        await client.aclose()
    for replica in [*replicas, late]:
        await eventually(
            lambda r=replica: _refused(r), 10, "the replica to refuse the bad artifact"
        )
        assert await _serves(replica, version)


async def _refused(client: SchedulerClient) -> bool:
    return await _reloads(client, "refused") >= 1


async def test_publish_to_a_file_and_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_REDIS_URL, raising=False)
    shipped = default_model()
    assert shipped is not None
    save_model(shipped, tmp_path / "m.json")
    target = tmp_path / "served" / "model.json"
    args = ["model", "publish", str(tmp_path / "m.json"), "--to", str(target)]
    assert await asyncio.to_thread(p2pctl, args) == 0
    assert load_model(target).version == shipped.version
    # No Redis URL (flag or environment) and no --to: nothing to do, an error.
    assert await asyncio.to_thread(p2pctl, ["model", "publish", str(tmp_path / "m.json")]) == 1
