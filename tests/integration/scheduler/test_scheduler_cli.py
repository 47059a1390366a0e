"""``python -m scheduler.service.cli`` as a real process: flags, config file, token, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.polling import wait_until
from tests.support.ports import wait_http
from tests.support.processes import LoggedProcess, log_tail

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[3]
COMMAND = [sys.executable, "-m", "scheduler.service.cli"]
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARLING_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _post(url: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _start(tmp_path: Path, *args: str, **env: str) -> tuple[LoggedProcess, str]:
    """Start the scheduler on a port the kernel picks; wait until /healthz answers."""
    process = LoggedProcess(
        [*COMMAND, *args], tmp_path / "scheduler.log", "p2p-scheduler", _env(**env)
    )

    def announced_port() -> bool:
        process.check_alive()
        return LISTENING.search(log_tail(process.log_path)) is not None

    wait_until(announced_port, timeout_s=20, what="the scheduler's startup line")
    match = LISTENING.search(log_tail(process.log_path))
    assert match is not None
    url = f"http://127.0.0.1:{match.group(1)}"
    assert wait_http(f"{url}/healthz", timeout_s=10, check=process.check_alive) == 200
    return process, url


def test_the_scheduler_process_serves_with_a_token_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    config = tmp_path / "scheduler.yaml"
    config.write_text(
        "listen: 127.0.0.1:1\nhost_ttl_s: 12\nscheduling:\n  back_to_source_quota: 2\n"
    )
    process, url = _start(
        tmp_path,
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        str(token_file),
    )
    try:
        host = {
            "host_id": "h1",
            "address": "127.0.0.1",
            "piece_port": 65002,
            "upload_capacity_bps": 1e8,
            "download_capacity_bps": 1e8,
            "upload_slots": 4,
        }
        assert _post(f"{url}/api/v1/hosts", host, None)[0] == 401
        assert _post(f"{url}/api/v1/hosts", host, "file-token") == (
            200,
            {"host_ttl_s": 12.0, "new_host": True},
        )
        peer = {
            "peer_id": "p1",
            "task_id": "sha256:" + "ab" * 32,
            "host_id": "h1",
            "size_bytes": 10,
            "piece_bytes": 4,
        }
        status, decision = _post(f"{url}/api/v1/peers", peer, "file-token")
        assert (status, decision["action"]) == (200, "back_to_source")
    finally:
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=10) == 0
    log = log_tail(process.log_path, max_lines=100)
    assert "cluster token required" in log
    assert "no cluster token" not in log
    assert "peer p1 registered" in log
    assert "peer p1 goes back to source" in log
    assert "shutting down" in log


def test_the_environment_gives_the_address_and_token(tmp_path: Path) -> None:
    process, url = _start(
        tmp_path, STARLING_SCHEDULER_LISTEN="127.0.0.1:0", STARLING_TOKEN="env-token"
    )
    try:
        status, answer = _post(f"{url}/api/v1/hosts", {}, "env-token")
        assert (status, answer["field"]) == (400, "host_id")
        assert _post(f"{url}/api/v1/hosts", {}, "file-token")[0] == 401
    finally:
        process.stop()


def test_help_documents_every_flag_and_variable() -> None:
    result = subprocess.run(
        [*COMMAND, "--help"], env=_env(), capture_output=True, text=True, timeout=30, check=True
    )
    for word in (
        "p2p-scheduler",
        "--config",
        "--listen",
        "--token-file",
        "--log-level",
        "STARLING_TOKEN",
        "STARLING_SCHEDULER_LISTEN",
        "127.0.0.1:8002",
        "host_ttl_s",
        "scheduling:",
        "/api/v1/openapi.json",
    ):
        assert word in result.stdout, word


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("listen: 127.0.0.1:0\nlisten_port: 3\n", "unknown setting 'listen_port'"),
        ("scheduling:\n  parents: 3\n", "unknown setting 'scheduling.parents'"),
        ("host_ttl_s: -1\n", "host_ttl_s must be a positive number"),
    ],
)
def test_a_bad_config_exits_2_naming_the_problem(
    tmp_path: Path, config_text: str, message: str
) -> None:
    config = tmp_path / "scheduler.yaml"
    config.write_text(config_text)
    result = subprocess.run(
        [*COMMAND, "--config", str(config)], env=_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr
