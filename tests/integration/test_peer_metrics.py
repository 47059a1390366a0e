"""The peer's metrics after real downloads: origin piece costs, back-to-source, evictions."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from peer.pieces import MiB
from tests.e2e.conftest import metric_value
from tests.integration.conftest import PeerFactory
from tests.support.counting_proxy import CountingProxy
from tests.support.images import push_image_async
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.timeout(120)


async def test_origin_downloads_and_evictions_are_counted(
    registry: RegistryProcess, counting_proxy: CountingProxy, make_peer: PeerFactory, tmp_path: Path
) -> None:
    image = await push_image_async(
        registry.url, "ops/metrics", "v1", [6 * MiB, 6 * MiB, 12 * MiB], seed=3, work_dir=tmp_path
    )
    (a, a_size), (b, b_size), (big, _) = image.layers
    # No scheduler: every download goes to the registry. The quota holds two small
    # layers, so the big one evicts both.
    peer = await make_peer(
        registry.host,
        counting_proxy.url,
        cache_quota_bytes=14 * MiB,
        min_piece_bytes=MiB,
        max_piece_bytes=MiB,
    )
    async with aiohttp.ClientSession() as session:
        for digest in (a, b, big):
            url = peer.make_url(f"/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}")
            async with session.get(url) as resp:
                assert resp.status == 200
                await resp.read()
        async with session.get(peer.make_url("/metrics")) as resp:
            text = await resp.text()
    pieces = sum(-(-size // MiB) for _, size in image.layers)
    assert metric_value(text, "p2p_peer_back_to_source_total") == 3
    assert metric_value(text, "p2p_peer_piece_cost_seconds_count", 'source="origin"') == pieces
    assert metric_value(text, "p2p_peer_piece_cost_seconds_count", 'source="peer"') == 0
    assert metric_value(text, "p2p_peer_cache_quota_bytes") == 14 * MiB
    assert metric_value(text, "p2p_peer_cache_evictions_total") == 2
    assert metric_value(text, "p2p_peer_cache_evicted_bytes_total") == a_size + b_size
    assert metric_value(text, "p2p_peer_tasks_total", 'result="complete"') == 3
    assert metric_value(text, "p2p_peer_parent_failures_total", 'reason="unreachable"') == 0
    assert 'p2p_peer_parent_failures_total{reason="corrupt"} 0.0' in text
