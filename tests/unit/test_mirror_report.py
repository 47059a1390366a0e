"""The mirror benchmark's cold ceiling: what verifying a blob allows on this machine."""

from __future__ import annotations

import pytest

from bench.report import cold_ceiling

GIB = 1024**3


def test_the_ceiling_is_direct_time_over_the_time_to_hash_the_layer() -> None:
    kinds = {
        "tmpfs": {"raw_get": {"direct": {"seconds": 0.43}}},
        "disk": {"raw_get": {"direct": {"seconds": 2.0}}},
        "skipped-kind": {"skipped": "no room"},
    }
    ceiling = cold_ceiling(kinds, GIB, sha256_rate=1.85e9)
    hash_s = GIB / 1.85e9
    assert ceiling["sha256_of_layer_s"] == pytest.approx(hash_s, abs=1e-4)
    assert ceiling["tmpfs_cold_ratio_max"] == pytest.approx(0.43 / hash_s, abs=1e-3)
    # Direct slower than hashing: verification is no limit, the ceiling is 1.
    assert ceiling["disk_cold_ratio_max"] == 1.0
    assert "skipped-kind_cold_ratio_max" not in ceiling
