"""The fault matrix with real processes: every pull succeeds, every digest matches.

Each test runs the real registry (behind a fault-injecting proxy), ``p2p-scheduler`` and
``p2p-peer`` processes, injects one fault and pulls every blob of an image through a
peer's mirror in a single GET per blob, checking its sha256. ``tests/e2e/README.md``
lists every fault of issue 6 with the test that covers it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess, metric_value
from tests.e2e.swarm_helpers import (
    Swarm,
    assert_pulls,
    bytes_by_source,
    parent_failures,
    pull,
)
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.registry import RegistryProcess
from tests.support.tcp_reset_proxy import TcpResetProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url,
        "faults/app",
        "v1",
        [8 * MiB, 2 * MiB, 1 * MiB],
        seed=61,
        work_dir=tmp_path / "image",
    )


def _uploaded(peer: PeerProcess) -> float:
    return metric_value(peer.metrics(), "p2p_peer_upload_bytes_total")


def test_frozen_parent_is_detected_blocked_and_the_child_finishes_from_others(
    registry: RegistryProcess, swarm: Swarm, tmp_path: Path
) -> None:
    # One layer: a new task would meet the frozen parent again (blocks are per task).
    image = push_image(
        registry.url, "faults/one", "v1", [6 * MiB], seed=62, work_dir=tmp_path / "one"
    )
    # Two holders that upload slowly, so the child has transfers in flight from both.
    frozen = swarm.join("frozen", upload_rate_bps=1 * MiB)
    assert pull(frozen, image)
    seed = swarm.join("seed", seed=True, upload_rate_bps=2 * MiB)
    assert pull(seed, image)
    child = swarm.join("child")
    result: dict[str, Any] = {}
    puller = threading.Thread(target=lambda: result.update(got=pull(child, image)))
    puller.start()
    try:
        # Frozen in the middle of a piece (one takes 0.75 s at its rate), so the child
        # waits on it: a parent it no longer needs would go unnoticed, and rightly so.
        wait_until(
            lambda: metric_value(frozen.metrics(), "p2p_peer_uploads_active") > 0,
            30,
            "the child to fetch from 'frozen'",
        )
        # SIGSTOP: the process still holds its sockets and the kernel still accepts
        # connections for it, but nothing answers: no error, no close, only silence.
        frozen.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        puller.join(timeout=90)
        took_s = time.monotonic() - frozen_at
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert not puller.is_alive()
    assert result.get("got") == {d: d for d in image.blob_digests}, child.log_text()
    assert parent_failures(child) >= 1
    assert "blocking parent frozen_" in child.log_text()
    # The child noticed within seconds, well before its client would have been cut off.
    assert took_s < 20, took_s
    assert metric_value(child.metrics(), "p2p_peer_stalled_responses_total") == 0


def test_parent_resetting_connections_is_blocked_and_the_child_finishes_from_others(
    image: PushedImage, swarm: Swarm
) -> None:
    piece_port = free_port()
    with TcpResetProxy(piece_port) as proxy:
        flaky = swarm.join(
            "flaky", piece_listen=f"127.0.0.1:{piece_port}", advertise_port=proxy.port
        )
        assert pull(flaky, image)
        seed = swarm.join("seed", seed=True)
        assert pull(seed, image)
        # From now on every connection to the flaky peer's piece server is reset once it
        # has carried 200 KiB: piece lists get through, a 1 MiB piece never does.
        proxy.reset_after_bytes = 200 * 1024
        child = swarm.join("child")
        assert pull(child, image) == {d: d for d in image.blob_digests}
    assert proxy.resets >= 1
    assert parent_failures(child) >= 1
    assert "blocking parent flaky_" in child.log_text()


def test_registry_5xx_is_retried_and_every_pull_succeeds(
    counting_proxy: CountingProxy, image: PushedImage, swarm: Swarm
) -> None:
    # The registry answers the next two blob GETs with 503, then heals. (A registry
    # failing a piece on every one of the peer's ``piece_attempts`` gets a clean OCI
    # error instead: tests/integration/test_mirror_blobs.py.)
    counting_proxy.fail_blobs_with = 503
    counting_proxy.failures_left = 2
    seed = swarm.join("seed", seed=True)
    peers = [swarm.join(f"peer{i}") for i in range(3)]
    assert_pulls([seed, *peers], image)
    assert counting_proxy.failures_left == 0  # every injected failure was met
    assert sum(r.status == 503 for r in counting_proxy.requests) == 2


def test_registry_resetting_connections_mid_body_is_retried(
    counting_proxy: CountingProxy, image: PushedImage, swarm: Swarm
) -> None:
    # The next two blob bodies from the registry end in a TCP reset after 300 KiB
    # (fewer than the peers' piece attempts, like the 5xx test above).
    counting_proxy.reset_after_bytes = 300 * 1024
    counting_proxy.resets_left = 2
    seed = swarm.join("seed", seed=True)
    peers = [swarm.join(f"peer{i}") for i in range(2)]
    assert_pulls([seed, *peers], image)
    assert counting_proxy.resets == 2


def test_slow_registry_pulls_finish_without_timeouts_or_retries(
    counting_proxy: CountingProxy, image: PushedImage, swarm: Swarm
) -> None:
    # Every registry response trickles at 2 MiB/s, and the seed fetches each blob in one
    # range request: the 8 MiB layer takes 4 s, longer than the seed's read timeout and
    # its stall timeout, yet bytes keep coming, so nothing may give up. (The other peers
    # keep the default stall timeout: their pace is the swarm's, not the registry's.)
    counting_proxy.rate_bps = 2 * MiB
    seed = swarm.join(
        "seed",
        seed=True,
        stall_timeout_s=3.0,
        origin_concurrency=1,
        upstream={"read_timeout_s": 1.0},
    )
    peers = [swarm.join(f"peer{i}", origin_concurrency=1) for i in range(2)]
    started = time.monotonic()
    assert_pulls([seed, *peers], image)
    assert time.monotonic() - started > 4.0  # the registry really was slow
    for peer in (seed, *peers):
        log_text = peer.log_text()
        assert metric_value(peer.metrics(), "p2p_peer_stalled_responses_total") == 0, log_text
        assert "attempt 1/" not in log_text and "blocking parent" not in log_text, log_text
    # Slow or not, the swarm still fetched each blob from the registry about once.
    assert counting_proxy.total_blob_bytes <= 1.5 * image.total_blob_bytes


def test_peer_restarted_mid_swarm_download_resumes_its_verified_pieces(
    image: PushedImage, swarm: Swarm
) -> None:
    seed = swarm.join("seed", seed=True, upload_rate_bps=2 * MiB)
    assert pull(seed, image)
    child = swarm.join("child")
    big, size = image.layers[0]
    progress = child.data_dir / "tasks" / "sha256" / (big.split(":")[1] + ".json")

    def verified_pieces() -> int:
        try:
            return len(json.loads(progress.read_text())["piece_digests"])
        except (OSError, ValueError):
            return 0

    reader = threading.Thread(target=_read_quietly, args=(child, image), daemon=True)
    reader.start()
    wait_until(lambda: verified_pieces() >= 2, 30, "two verified pieces of the big layer")
    child.kill()  # SIGKILL mid-download: no chance to tidy up
    kept = verified_pieces()
    uploaded_before = _uploaded(seed)

    restarted = swarm.join("child")  # same host id and data dir
    assert pull(restarted, image) == {d: d for d in image.blob_digests}
    assert f"resuming with {kept} of {-(-size // MiB)} pieces" in restarted.log_text()
    # What was verified before the kill was not fetched again, and the rest came from
    # the swarm: the scheduler did not take the restarted peer for one that already
    # held the pieces its first run had reported.
    sources = bytes_by_source(restarted)
    assert sources["origin"] == 0, sources
    fetched = sum(sources.values())
    assert fetched <= image.total_blob_bytes - kept * MiB
    assert _uploaded(seed) - uploaded_before <= fetched


def _read_quietly(peer: PeerProcess, image: PushedImage) -> None:
    """Pull, not minding the peer dying under the reader."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        pull(peer, image)
