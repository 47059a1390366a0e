"""bench.runner's shared pieces that need no root and no network."""

from __future__ import annotations

from pathlib import Path

from bench.runner import new_work_dir


def test_a_work_dir_that_does_not_exist_yet_is_created(tmp_path: Path) -> None:
    parent = tmp_path / "not" / "there"
    first = new_work_dir(str(parent), "starling-x-")
    second = new_work_dir(str(parent), "starling-x-")
    assert first.is_dir() and second.is_dir() and first != second
    assert first.parent == parent and first.name.startswith("starling-x-")
