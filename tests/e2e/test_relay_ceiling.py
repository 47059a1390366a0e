"""bench.relay_ceiling end to end, with a small blob: every pipeline runs and is reported."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import relay_ceiling
from tests.support.registry import registry_unavailable_reason
from tests.support.requirements import require

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _leftovers() -> set[Path]:
    return set(Path("/dev/shm").glob("relay-ceiling-*"))


def test_every_pipeline_is_timed_against_the_direct_get(tmp_path: Path) -> None:
    require(registry_unavailable_reason())
    before = _leftovers()
    out = tmp_path / "relay.json"
    assert relay_ceiling.main(["--size", "8MiB", "--rounds", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"direct", "hash", "hash_and_write", "hash_file"}
    assert results["direct"]["speed_vs_direct"] == 1.0
    for result in results.values():
        assert len(result["runs_s"]) == 2 and all(run > 0 for run in result["runs_s"])
    assert report["size_bytes"] == 8 * 1024 * 1024
    assert "openssl dgst -sha256" in report["pipelines"]["hash_and_write"]
    assert _leftovers() == before, "the registry's tmpfs dir was left behind"


def test_a_failing_stage_fails_the_pipeline() -> None:
    with pytest.raises(subprocess.CalledProcessError):
        relay_ceiling.time_pipeline("true | false | cat")
