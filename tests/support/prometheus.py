"""A real Prometheus (Debian ``prometheus``) on an ephemeral loopback port, and promtool.

The server runs the shipped configuration (deploy/prometheus/prometheus.yml) with its
job names, relabelling and rule files, but with a one-second scrape and evaluation
interval and with file-based targets pointing at processes of the test.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .polling import POLL_INTERVAL_S
from .ports import free_port
from .processes import LoggedProcess, ProcessFailed

PROMETHEUS_BINARY = "prometheus"
PROMTOOL_BINARY = "promtool"
START_TIMEOUT_S = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"


def prometheus_unavailable_reason() -> str | None:
    for binary in (PROMETHEUS_BINARY, PROMTOOL_BINARY):
        if shutil.which(binary) is None:
            return f"{binary} not installed (Debian package prometheus)"
    return None


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL_BINARY, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def has_data(result: list[dict[str, Any]]) -> bool:
    """Whether a query_range result has at least one sample that is a number."""
    return any(
        not math.isnan(float(value))
        for series in result
        for _, value in series.get("values", [series.get("value", (0, "NaN"))])
    )


class PrometheusProcess:
    """Prometheus scraping ``targets`` (job name -> ["host:port", ...]) with the shipped
    configuration and rules."""

    def __init__(self, work_dir: Path, targets: dict[str, list[str]]) -> None:
        self.work_dir = work_dir
        self.targets = targets
        self.port = 0
        self._process: LoggedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        missing = set(self.targets) - set(jobs)
        if missing:
            raise ValueError(f"the shipped config has no job {sorted(missing)}")
        for name, job in jobs.items():
            targets_file = self.work_dir / f"{name}.targets.yml"
            targets_file.write_text(yaml.safe_dump([{"targets": self.targets.get(name, [])}]))
            job["file_sd_configs"] = [{"files": [str(targets_file)]}]
        path = self.work_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> PrometheusProcess:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self.port = free_port()
        process = LoggedProcess(
            [
                PROMETHEUS_BINARY,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.work_dir / "prometheus.log",
            "prometheus",
        )
        self._process = process
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            process.check_alive()
            if time.monotonic() >= deadline:
                raise ProcessFailed(process.describe_failure("not ready in time"))
            time.sleep(POLL_INTERVAL_S)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` or raises with Prometheus' error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Any]:
        data = self.api("query_range", query=expr, start=str(start), end=str(end), step=str(step_s))
        result: list[Any] = data["result"]
        return result

    def log_text(self) -> str:
        path = self.work_dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""
