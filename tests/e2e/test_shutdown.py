"""Graceful shutdown of a real ``p2p-peer`` process in the middle of a swarm pull."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from peer.daemon import SHUTDOWN_GRACE_S
from peer.pieces import MiB
from tests.e2e.conftest import metric_value
from tests.e2e.swarm_helpers import Swarm, assert_pulls, pull
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.registry import RegistryProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url, "shutdown/app", "v1", [8 * MiB, 2 * MiB], seed=71, work_dir=tmp_path / "image"
    )


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET; (0, {}) when nothing answers."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_sigterm_mid_swarm_pull_lets_uploads_finish_and_every_pull_succeeds(
    image: PushedImage, swarm: Swarm
) -> None:
    # A seed whose uploads crawl, so SIGTERM lands with uploads in flight.
    seed = swarm.join("seed", seed=True, upload_rate_bps=2 * MiB)
    assert pull(seed, image)
    pieces = f"http://127.0.0.1:{seed.health()['piece_port']}"
    big = image.layers[0][0]
    children = [swarm.join(f"child{i}") for i in range(2)]
    failures: list[BaseException] = []

    def pull_all() -> None:
        try:
            assert_pulls(children, image)
        except BaseException as exc:  # handed to the test thread
            failures.append(exc)

    puller = threading.Thread(target=pull_all)
    puller.start()
    wait_until(
        lambda: metric_value(seed.metrics(), "p2p_peer_uploads_active") > 0,
        30,
        "the seed to upload",
    )
    seed.send_signal(signal.SIGTERM)
    terminated_at = time.monotonic()
    # While uploads under way finish, the seed takes no new child: every new piece
    # request is refused at once, so children ask elsewhere instead of waiting.
    wait_until(
        lambda: _get(f"{pieces}/healthz")[1].get("status") == "shutting_down",
        5,
        "the seed to drain",
    )
    status, body = _get(f"{pieces}/api/v1/tasks/{big}/pieces/0", swarm.scheduler.token)
    assert (status, body) == (503, {"error": "this peer is shutting down"})

    exit_status = seed.wait_exit(SHUTDOWN_GRACE_S + 5)
    took_s = time.monotonic() - terminated_at
    puller.join(timeout=90)
    assert exit_status == 0
    assert took_s < SHUTDOWN_GRACE_S, took_s  # the uploads finished; no cut-off needed
    assert not puller.is_alive() and not failures, failures
    log_text = seed.log_text()
    assert "waiting up to" in log_text and "uploads finished" in log_text, log_text
    # No child saw a piece transfer from the seed break: each one in flight finished.
    for child in children:
        assert "failed piece" not in child.log_text(), child.log_text()
    assert (
        metric_value(swarm.scheduler.metrics(), "p2p_scheduler_events_total", 'type="host_left"')
        >= 1
    )
