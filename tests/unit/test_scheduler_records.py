"""The file defaults behind the record and artifact store interfaces (issue 5's seam)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.service.records import (
    ArtifactStore,
    FileArtifactStore,
    FileRecordStore,
    RecordStore,
)


async def test_records_come_back_in_order_and_survive_a_torn_line(tmp_path: Path) -> None:
    store: RecordStore = FileRecordStore(tmp_path / "records")
    assert await store.read(10) == []
    await store.append([{"piece": 0, "cost_s": 0.1}, {"piece": 1, "cost_s": 0.2}])
    await store.append([{"piece": 2, "cost_s": 0.3}])
    with (tmp_path / "records" / "records.jsonl").open("a") as fh:
        fh.write('{"piece": 3, "cost')  # a crash mid-write
    assert await store.read(10) == [
        {"piece": 0, "cost_s": 0.1},
        {"piece": 1, "cost_s": 0.2},
        {"piece": 2, "cost_s": 0.3},
    ]
    assert [r["piece"] for r in await store.read(2)] == [2]
    assert await store.read(0) == []


async def test_artifacts_are_replaced_whole(tmp_path: Path) -> None:
    store: ArtifactStore = FileArtifactStore(tmp_path / "models")
    assert await store.get("evaluator.onnx") is None
    await store.put("evaluator.onnx", b"v1")
    await store.put("evaluator.onnx", b"version 2")
    assert await store.get("evaluator.onnx") == b"version 2"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["evaluator.onnx"]


@pytest.mark.parametrize("name", ["../escape", ".hidden", "", "a/b"])
async def test_artifact_names_stay_inside_the_directory(tmp_path: Path, name: str) -> None:
    store = FileArtifactStore(tmp_path)
    with pytest.raises(ValueError):
        await store.put(name, b"x")


async def test_records_rotate_by_size_and_read_back_across_files(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path, max_file_bytes=40, keep_files=2)
    for piece in range(6):
        await store.append([{"piece": piece, "pad": "xxxxxxxxxx"}])  # ~30 bytes a line
    # Each append past 40 bytes rotated; only the newest two rotated files are kept.
    assert [p.name for p in store.rotated()] == ["records.jsonl.4", "records.jsonl.5"]
    assert [r["piece"] for r in await store.read(10)] == [3, 4, 5]
