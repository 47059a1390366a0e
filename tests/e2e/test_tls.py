"""TLS end to end: ``p2p-scheduler`` and ``p2p-peer`` processes given one ``tls:`` block.

The same block goes into every config file, as docs/tls.md tells operators; the
certificates are made in the test. The seed and the peers pull through their plain-HTTP
mirrors while pieces and scheduler calls go over TLS; ``p2pctl`` reaches the scheduler
and a piece server with ``--ca-file`` and says what to do without it.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess, SchedulerProcess
from tests.e2e.swarm_helpers import assert_pulls, bytes_by_source, peer_settings
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import POLL_INTERVAL_S
from tests.support.ports import http_status
from tests.support.registry import RegistryProcess
from tests.support.tls import CertFiles, ClusterCA

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


class TLSSchedulerProcess(SchedulerProcess):
    """``p2p-scheduler`` with a ``tls`` block in its config file: its URL is https."""

    def __init__(self, work_dir: Path, token: str, tls: CertFiles) -> None:
        super().__init__(work_dir, token, {"tls": tls.block()})
        self.context = ssl.create_default_context(cafile=str(tls.ca_file))
        self.context.check_hostname = False

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _wait_until_healthy(self) -> None:
        """As the plain scheduler's, but over https trusting the cluster CA."""
        deadline = time.monotonic() + 20
        while self.get("/healthz") is None:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError("p2p-scheduler exited")
            if time.monotonic() > deadline:
                raise TimeoutError("no answer on /healthz within 20 s")
            time.sleep(POLL_INTERVAL_S)

    def get(self, path: str) -> Any:
        """The JSON answer over https, trusting the cluster CA; None if none came."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=2, context=self.context) as r:
                return json.loads(r.read())
        except OSError:
            return None


@pytest.fixture
def cluster_tls(tmp_path: Path) -> CertFiles:
    """The one set of files every part of the cluster is given."""
    return ClusterCA(tmp_path / "tls").issue("starling", hosts=("starling",))


@pytest.fixture
def tls_scheduler(tmp_path: Path, cluster_tls: CertFiles) -> Any:
    scheduler = TLSSchedulerProcess(tmp_path / "scheduler", "e2e-tls-token", cluster_tls)
    yield scheduler.start()
    scheduler.kill()


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url, "tls/app", "v1", [8 * MiB, 2 * MiB], seed=23, work_dir=tmp_path / "image"
    )


def p2pctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctl.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_a_cluster_with_one_tls_block_pulls_over_tls(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    image: PushedImage,
    tls_scheduler: TLSSchedulerProcess,
    cluster_tls: CertFiles,
    start_peer: Any,
    tmp_path: Path,
) -> None:
    def join(name: str, **extra: Any) -> PeerProcess:
        settings = peer_settings(registry.host, counting_proxy.url, tls_scheduler, **extra)
        peer: PeerProcess = start_peer(name, host_id=name, tls=cluster_tls.block(), **settings)
        return peer

    seed = join("seed", seed=True)
    peers = [join(f"peer{i}") for i in range(2)]
    assert_pulls([seed], image)
    assert_pulls(peers, image)
    from_swarm = sum(s["peer"] + s["seed"] for s in map(bytes_by_source, peers))
    assert from_swarm >= 0.8 * 2 * image.total_blob_bytes, from_swarm
    assert counting_proxy.total_blob_bytes <= 1.1 * image.total_blob_bytes

    assert tls_scheduler.get("/healthz")["hosts"] == 3
    piece_port = int(seed.health()["piece_port"])
    # The TLS ports close a plain-HTTP connection without an answer.
    assert http_status(f"http://127.0.0.1:{piece_port}/healthz") is None
    assert http_status(f"{tls_scheduler.url.replace('https', 'http')}/healthz") is None

    token_file = tmp_path / "token"
    token_file.write_text(tls_scheduler.token)
    ca = str(cluster_tls.ca_file)
    status_args = ("status", "--json", "--scheduler", tls_scheduler.url)
    ok = p2pctl(*status_args, "--token-file", str(token_file), "--ca-file", ca)
    assert ok.returncode == 0, ok.stderr
    assert sorted(h["host_id"] for h in json.loads(ok.stdout)["hosts"]) == [
        "peer0",
        "peer1",
        "seed",
    ]
    # The CA may come from the environment, as the daemons' STARLING_TLS_CA_FILE.
    from_env = p2pctl(
        *status_args, "--token-file", str(token_file), env={"STARLING_TLS_CA_FILE": ca}
    )
    assert from_env.returncode == 0, from_env.stderr
    # A piece server's admin API, over https with the CA.
    listing = p2pctl(
        "cache", "ls", "--json", "--peer", f"https://127.0.0.1:{piece_port}",
        "--token-file", str(token_file), "--ca-file", ca,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert {b["digest"] for b in json.loads(listing.stdout)["blobs"]} == set(image.blob_digests)
    # Preheat finds the seed through the scheduler and reaches its piece server by https.
    heat = p2pctl(
        "preheat", image.reference, "--scheduler", tls_scheduler.url,
        "--token-file", str(token_file), "--ca-file", ca, "--insecure-registry", registry.host,
    )  # fmt: skip
    assert heat.returncode == 0, heat.stdout + heat.stderr
    assert f"seed (https://127.0.0.1:{piece_port})" in heat.stdout
    assert f"done: {len(image.blob_digests)} blobs on 1 peer" in heat.stdout

    # Without the CA, or with http://, p2pctl says what to do, not a traceback.
    no_ca = p2pctl(*status_args, "--token-file", str(token_file))
    assert no_ca.returncode == 1
    assert "is not accepted by the system's CAs" in no_ca.stderr, no_ca.stderr
    assert "--ca-file or $STARLING_TLS_CA_FILE" in no_ca.stderr
    plain = p2pctl("status", "--scheduler", f"http://127.0.0.1:{tls_scheduler.port}")
    assert plain.returncode == 1
    assert "closed the connection without answering; if it serves TLS, use an https://" in (
        plain.stderr
    ), plain.stderr
    for text in (no_ca.stderr, plain.stderr, tls_scheduler.log_text(), seed.log_text()):
        assert "Traceback" not in text
    assert "listening on https://127.0.0.1:" in tls_scheduler.log_text()
