"""The served model: loaded by default, refused loudly, hot-reloaded under load; records."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path

from scheduler.core.tree_model import TreeEnsemble
from scheduler.learning.artifact import default_model, load_model, save_model
from tests.integration.scheduler.conftest import (
    SchedulerClient,
    SchedulerFactory,
    eventually,
    report,
)


def _info(metrics: str) -> dict[str, float]:
    found = re.findall(
        r'p2p_scheduler_model_info\{feature_version="[^"]*",version="([^"]+)"\} (\S+)', metrics
    )
    return {version: float(value) for version, value in found}


def _fallbacks(metrics: str, reason: str) -> float:
    match = re.search(rf'p2p_scheduler_model_fallbacks_total\{{reason="{reason}"\}} (\S+)', metrics)
    assert match, metrics
    return float(match.group(1))


def _shipped() -> TreeEnsemble:
    model = default_model()
    assert model is not None, "make model builds scheduler/learning/default_model.json"
    return model


async def _swarm(client: SchedulerClient, children: int) -> None:
    await client.announce("seed-host")
    await client.register("seed", "seed-host", pieces=[0, 1, 2, 3])
    for i in range(children):
        await client.announce(f"h{i}")
        await client.register(f"c{i}", f"h{i}")


async def test_the_shipped_model_is_used_by_default(make_scheduler: SchedulerFactory) -> None:
    client = await make_scheduler(evaluator="learned")
    assert _info(await client.metrics()) == {_shipped().version: 1.0}
    await _swarm(client, 1)
    answer = await client.schedule("c0")
    assert [p["peer_id"] for p in answer["parents"]] == ["seed"]


async def test_a_model_of_another_feature_version_falls_back_to_rule(
    make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "model.json"
    save_model(replace(_shipped(), feature_version="starling-features-0"), path)
    client = await make_scheduler(evaluator="learned", model_path=str(path))
    metrics = await client.metrics()
    assert _info(metrics) == {"rule": 1.0}
    assert _fallbacks(metrics, "feature_version") == 1
    await _swarm(client, 1)
    answer = await client.schedule("c0")
    # The rule evaluator's score of an idle normal host in no idc: 0.6 + 0.1 x 0.5.
    assert answer["parents"][0]["score"] == 0.65


async def test_hot_reload_swaps_models_without_dropping_requests(
    make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "model.json"
    shipped = _shipped()
    save_model(shipped, path)
    client = await make_scheduler(evaluator="learned", model_path=str(path), model_reload_s=0.05)
    await _swarm(client, 20)
    assert _info(await client.metrics()) == {shipped.version: 1.0}

    # Publish a bad file first (kept out), then a new model (swapped in), while requests run.
    stop = asyncio.Event()

    async def load() -> int:
        answered = 0
        while not stop.is_set():
            for i in range(20):
                status, _ = await client.call("POST", f"/api/v1/peers/c{i}/schedule", {})
                assert status == 200
                answered += 1
        return answered

    runner = asyncio.create_task(load())
    path.write_text("{not json")
    await eventually(
        lambda: _reloads(client, "refused"), timeout_s=5, what="the bad file to be refused"
    )
    newer = replace(shipped, baseline=shipped.baseline + 1.0, metadata={"note": "v2"})
    save_model(newer, tmp_path / "staging.json")
    (tmp_path / "staging.json").replace(path)
    new_version = load_model(path).version
    assert new_version != shipped.version
    await eventually(
        lambda: _has_version(client, new_version), timeout_s=5, what="the new model to be in use"
    )
    stop.set()
    assert await runner > 0
    assert _info(await client.metrics()) == {new_version: 1.0}


async def _reloads(client: SchedulerClient, result: str) -> bool:
    match = re.search(
        rf'p2p_scheduler_model_reloads_total\{{result="{result}"\}} (\S+)', await client.metrics()
    )
    return match is not None and float(match.group(1)) >= 1


async def _has_version(client: SchedulerClient, version: str) -> bool:
    return _info(await client.metrics()).get(version) == 1.0


async def test_reported_pieces_become_records_on_disk(
    make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    client = await make_scheduler(
        evaluator="learned", records_dir=str(records), records_cluster="lab", records_flush_s=0.05
    )
    await _swarm(client, 1)
    await client.schedule("c0")
    status, _ = await client.report("c0", report(0, "seed"), report(1, None))
    assert status == 200
    path = records / "records.jsonl"

    async def written() -> bool:
        return path.exists() and path.read_text().endswith("\n")

    await eventually(written, timeout_s=5, what="the record file")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert (record["cluster"], record["child_host"], record["parent_host"]) == (
        "lab",
        "h0",
        "seed-host",
    )
    assert record["evaluator"] == "learned" and record["piece_index"] == 0
    written = 'p2p_scheduler_transfer_records_total{outcome="written",store="file"} 1.0'
    assert written in await client.metrics()
