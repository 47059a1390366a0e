"""``p2pctl status``, ``preheat`` and ``cache ls|rm`` as a process, against real processes.

A real registry (behind the counting proxy, so the tests see what the registry sent),
``p2p-scheduler`` and ``p2p-peer`` processes; p2pctl runs as ``python -m ctl.cli`` and
is judged by its exit status and what it prints, as an operator would.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peer.pieces import MiB
from tests.e2e.conftest import PeerProcess, SchedulerProcess, metric_value
from tests.support.counting_proxy import CountingProxy
from tests.support.images import PushedImage, push_image
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.registry import RegistryProcess, TokenRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

UNKNOWN_DIGEST = "sha256:" + "0" * 64


def p2pctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctl.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},  # no STARLING_* from the caller's environment
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _fails(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """p2pctl failed with exit status 1, saying each of ``phrases`` on stderr."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def _pull(peer: PeerProcess, image: PushedImage) -> None:
    for digest in image.blob_digests:
        url = f"{peer.url}/v2/{image.repo}/blobs/{digest}?ns={image.registry_host}"
        with urllib.request.urlopen(url, timeout=120) as resp:
            assert "sha256:" + hashlib.sha256(resp.read()).hexdigest() == digest


@dataclass
class Cluster:
    scheduler: SchedulerProcess
    token_file: Path
    join: Callable[..., PeerProcess]  # join(name, **settings): host_id is the name

    def hosts(self) -> int:
        with urllib.request.urlopen(f"{self.scheduler.url}/healthz", timeout=5) as resp:
            return int(json.loads(resp.read())["hosts"])

    def wait_for_hosts(self, count: int) -> None:
        wait_until(lambda: self.hosts() == count, 30, f"{count} hosts at the scheduler")


@pytest.fixture
def image(registry: RegistryProcess, tmp_path: Path) -> PushedImage:
    return push_image(
        registry.url, "ops/app", "v1", [6 * MiB, 2 * MiB, 512 * 1024], seed=7, work_dir=tmp_path
    )


def _upstream(registry_host: str, endpoint: str) -> dict[str, Any]:
    return {
        "default_registry": registry_host,
        "insecure_registries": [registry_host],
        "endpoints": {registry_host: endpoint},
    }


@pytest.fixture
def cluster(
    registry: RegistryProcess,
    counting_proxy: CountingProxy,
    start_scheduler: Any,
    start_peer: Any,
    tmp_path: Path,
) -> Cluster:
    scheduler = start_scheduler()
    token_file = tmp_path / "token"
    token_file.write_text(scheduler.token + "\n")

    def join(name: str, **extra: Any) -> PeerProcess:
        settings = {
            "scheduler": scheduler.url,
            "token": scheduler.token,
            "host_id": name,
            "upstream": _upstream(registry.host, counting_proxy.url),
            **extra,
        }
        peer: PeerProcess = start_peer(name, **settings)
        return peer

    return Cluster(scheduler, token_file, join)


def _status_json(cluster: Cluster) -> dict[str, Any]:
    url, token_file = cluster.scheduler.url, str(cluster.token_file)
    out = _ok(p2pctl("status", "--json", "--scheduler", url, "--token-file", token_file))
    status: dict[str, Any] = json.loads(out)
    return status


# -- status -------------------------------------------------------------------------------


def test_status_summarizes_hosts_tasks_and_bytes(cluster: Cluster, image: PushedImage) -> None:
    seed = cluster.join("seed-a", seed=True)
    peers = [cluster.join(f"node-{n}") for n in (1, 2)]
    cluster.wait_for_hosts(3)
    _pull(seed, image)
    _pull(peers[0], image)
    # Peers report pieces in batches, shortly after serving them: wait for the last.
    wait_until(
        lambda: sum(_status_json(cluster)["piece_bytes"].values()) == 2 * image.total_blob_bytes,
        30,
        "every piece reported",
    )

    out = _ok(
        p2pctl(
            "status", "--scheduler", cluster.scheduler.url, "--token-file", str(cluster.token_file)
        )
    )
    assert "3 hosts (1 seed)" in out and f"{len(image.blob_digests)} tasks" in out
    for name in ("seed-a", "node-1", "node-2"):
        assert name in out
    for digest in image.blob_digests:
        assert digest[:19] in out  # sha256: and 12 hex digits

    status = _status_json(cluster)
    assert status["counts"] == {
        "hosts": 3,
        "seed_hosts": 1,
        "peers": 2 * len(image.blob_digests),
        "tasks": len(image.blob_digests),
    }
    # The seed fetched from the registry, node-1 (mostly: a piece the seed had not reported
    # yet comes from the registry) from the seed; the summary line says so.
    piece_bytes = status["piece_bytes"]
    assert piece_bytes["peer"] == 0  # node-2 pulled nothing
    assert piece_bytes["seed"] >= image.total_blob_bytes / 2
    share = 100 * (piece_bytes["seed"] + piece_bytes["peer"]) / sum(piece_bytes.values())
    assert f"from peers and seeds: {share:.0f}%" in out


def test_status_says_why_it_cannot_answer(cluster: Cluster, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    _fails(p2pctl("status", "--scheduler", down), "cannot reach the scheduler", "refused")
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    url = cluster.scheduler.url
    _fails(p2pctl("status", "--scheduler", url, "--token-file", str(wrong)), "token was refused")
    _fails(p2pctl("status", "--scheduler", url), "needs the cluster token")
    missing = str(tmp_path / "no-such-file")
    _fails(p2pctl("status", "--scheduler", url, "--token-file", missing), "cannot read the token")


# -- preheat ------------------------------------------------------------------------------


def test_preheat_fills_the_seed_and_the_rollout_pulls_from_it(
    cluster: Cluster, image: PushedImage, counting_proxy: CountingProxy, registry: RegistryProcess
) -> None:
    seed = cluster.join("seed-a", seed=True)
    node = cluster.join("node-1")
    cluster.wait_for_hosts(2)

    out = _ok(
        p2pctl(
            "preheat",
            image.reference,
            "--scheduler",
            cluster.scheduler.url,
            "--token-file",
            str(cluster.token_file),
            "--insecure-registry",
            registry.host,
        )
    )
    blobs = len(image.blob_digests)
    assert f"{blobs} blobs" in out and f"done: {blobs} blobs on 1 peer" in out
    assert "seed-a" in out and "node-1" not in out  # seeds only
    # The seed holds every blob; the registry sent each once, to it.
    listing = json.loads(
        _ok(
            p2pctl(
                "cache", "ls", "--json", "--peer", seed.url, "--token-file", str(cluster.token_file)
            )
        )
    )
    held = {b["digest"]: b["state"] for b in listing["blobs"]}
    assert held == dict.fromkeys(image.blob_digests, "complete")
    assert counting_proxy.total_blob_bytes == image.total_blob_bytes

    # The rollout: the node pulls everything from the seed, nothing from the registry.
    _pull(node, image)
    assert counting_proxy.total_blob_bytes == image.total_blob_bytes
    metrics = node.metrics()
    assert metric_value(metrics, "p2p_peer_download_bytes_total", 'source="origin"') == 0
    assert metric_value(metrics, "p2p_peer_download_bytes_total", 'source="seed"') == (
        image.total_blob_bytes
    )

    # Again: nothing to fetch, done at once.
    again = _ok(
        p2pctl(
            "preheat",
            image.reference,
            "--peer",
            seed.url,
            "--token-file",
            str(cluster.token_file),
            "--insecure-registry",
            registry.host,
        )
    )
    assert f"done: {blobs} blobs on 1 peer" in again
    assert counting_proxy.total_blob_bytes == image.total_blob_bytes


def test_preheat_says_why_it_failed(
    cluster: Cluster, image: PushedImage, registry: RegistryProcess, tmp_path: Path
) -> None:
    token = ("--token-file", str(cluster.token_file))
    insecure = ("--insecure-registry", registry.host)
    url = cluster.scheduler.url
    node = cluster.join("node-1")
    cluster.wait_for_hosts(1)
    # No seed peer yet.
    _fails(
        p2pctl("preheat", image.reference, "--scheduler", url, *token, *insecure),
        "knows no seed peer",
    )
    down = f"http://127.0.0.1:{free_port()}"
    _fails(
        p2pctl("preheat", image.reference, "--scheduler", down, *token, *insecure),
        "cannot reach the scheduler",
    )
    cluster.join("seed-a", seed=True)
    cluster.wait_for_hosts(2)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    _fails(
        p2pctl("preheat", image.reference, "--scheduler", url, "--token-file", str(wrong)),
        "token was refused",
    )
    unknown_tag = f"{registry.host}/{image.repo}:no-such-tag"
    _fails(
        p2pctl("preheat", unknown_tag, "--scheduler", url, *token, *insecure),
        "no manifest ops/app:no-such-tag",
    )
    _fails(
        p2pctl("preheat", "UPPER/Case:tag", "--scheduler", url, *token), "not an image reference"
    )
    # A peer that is not running fails its blobs, named in the output.
    result = p2pctl(
        "preheat", image.reference, "--peer", down, "--peer", node.url, *token, *insecure
    )
    assert result.returncode == 1, result
    assert f"failed: {len(image.blob_digests)} of {2 * len(image.blob_digests)}" in result.stdout
    assert "cannot reach the peer" in result.stdout


def test_preheat_from_a_registry_that_wants_credentials(
    token_registry: TokenRegistry, start_scheduler: Any, start_peer: Any, tmp_path: Path
) -> None:
    image = push_image(
        token_registry.url,
        "private/app",
        "v1",
        [1 * MiB],
        seed=3,
        auth=token_registry.auth,
        work_dir=tmp_path / "image",
    )
    scheduler = start_scheduler()
    upstream = _upstream(token_registry.host, token_registry.url)
    seed = start_peer(
        "seed",
        scheduler=scheduler.url,
        token=scheduler.token,
        host_id="seed",
        seed=True,
        upstream=upstream,
    )
    token_file = tmp_path / "token"
    token_file.write_text(scheduler.token)
    common = (
        "--peer",
        seed.url,
        "--token-file",
        str(token_file),
        "--insecure-registry",
        token_registry.host,
    )
    _fails(p2pctl("preheat", image.reference, *common), "pass --registry-credentials")
    credentials = tmp_path / "credentials"
    credentials.write_text(":".join(token_registry.auth))
    out = _ok(
        p2pctl("preheat", image.reference, *common, "--registry-credentials", str(credentials))
    )
    assert f"done: {len(image.blob_digests)} blobs on 1 peer" in out
    assert seed.health()["cache_blobs"] == len(image.blob_digests)


# -- cache --------------------------------------------------------------------------------


def test_cache_ls_and_rm(cluster: Cluster, image: PushedImage) -> None:
    peer = cluster.join("node-1")
    cluster.wait_for_hosts(1)
    _pull(peer, image)
    token = ("--token-file", str(cluster.token_file))

    listing = _ok(p2pctl("cache", "ls", "--peer", peer.url, *token))
    for digest in image.blob_digests:
        assert digest in listing
    assert f"{len(image.blob_digests)} cached blobs" in listing

    victim = image.layers[0][0]
    out = _ok(p2pctl("cache", "rm", victim, "--peer", peer.url, *token))
    assert f"removed {victim}" in out
    assert not (peer.data_dir / "blobs" / "sha256" / victim.split(":")[1]).exists()
    after = json.loads(_ok(p2pctl("cache", "ls", "--json", "--peer", peer.url, *token)))
    assert {b["digest"] for b in after["blobs"]} == set(image.blob_digests) - {victim}
    assert peer.health()["cache_blobs"] == len(image.blob_digests) - 1
    # The scheduler was told: the node no longer serves that blob.
    tasks = {t["task_id"] for t in _status_json(cluster)["tasks"]}
    assert victim not in tasks
    # It comes back on the next pull.
    _pull(peer, image)
    assert peer.health()["cache_blobs"] == len(image.blob_digests)


def test_cache_commands_say_why_they_failed(
    cluster: Cluster, image: PushedImage, tmp_path: Path
) -> None:
    peer = cluster.join("node-1")
    cluster.wait_for_hosts(1)
    _pull(peer, image)
    token = ("--token-file", str(cluster.token_file))
    _fails(p2pctl("cache", "rm", UNKNOWN_DIGEST, "--peer", peer.url, *token), "is not in the cache")
    _fails(p2pctl("cache", "rm", "sha256:xyz", "--peer", peer.url, *token), "digest")
    # One unknown digest among known ones: the known one goes, the exit status says not all.
    known = image.config_digest
    result = p2pctl("cache", "rm", known, UNKNOWN_DIGEST, "--peer", peer.url, *token)
    assert result.returncode == 1 and f"removed {known}" in result.stdout
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    _fails(
        p2pctl("cache", "ls", "--peer", peer.url, "--token-file", str(wrong)), "token was refused"
    )
    _fails(p2pctl("cache", "ls", "--peer", peer.url), "needs the cluster token")
    down = f"http://127.0.0.1:{free_port()}"
    _fails(p2pctl("cache", "ls", "--peer", down, *token), "cannot reach the peer", "refused")
    assert peer.health()["cache_blobs"] == len(image.blob_digests) - 1


def test_cache_on_a_peer_without_token_serves_loopback(
    registry: RegistryProcess, image: PushedImage, start_peer: Any
) -> None:
    """No scheduler, no token: the admin API is on the mirror, for loopback clients only."""
    peer = start_peer("alone", upstream=_upstream(registry.host, registry.url))
    _pull(peer, image)
    listing = json.loads(_ok(p2pctl("cache", "ls", "--json", "--peer", peer.url)))
    assert {b["digest"] for b in listing["blobs"]} == set(image.blob_digests)
    _ok(p2pctl("cache", "rm", image.config_digest, "--peer", peer.url))
    assert peer.health()["cache_blobs"] == len(image.blob_digests) - 1
