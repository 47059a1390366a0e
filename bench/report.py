"""The mirror benchmark's results: per-path medians, the JSON facts and the printed table."""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.probes import MB, Sample, meminfo
from peer.sizes import format_size

PATHS = ("direct", "cold", "warm")
METHOD_TITLES = {"raw_get": "raw GET", "ctr_fetch": "ctr fetch", "ctr_pull": "ctr pull"}
REPO_ROOT = Path(__file__).resolve().parent.parent
# The code whose speed is measured; its state goes into the report.
MEASURED_CODE = ("peer", "registry_proxy")

# What we want from the peer (tmpfs data dir, raw GET); checked and reported, never forced.
TARGET_KIND = "tmpfs"
TARGET_METHOD = "raw_get"
TARGET_COLD_RATIO = 0.75
TARGET_WARM_RATIO = 1.0
TARGET_PEAK_RSS_BYTES = 200 * MB
# More tmpfs than this in use before a run is worth a warning: it is RAM the run lacks.
SHMEM_WARNING_BYTES = 1024 * 1024 * 1024
# sha256 speed probe: passes over a chunk the size the peer hashes as bytes arrive (so
# it stays in the CPU's cache, the fastest this core hashes: over a 64 MiB buffer it runs
# a third slower here), enough passes for a few hundred MB.
SHA256_PROBE_CHUNK_BYTES = 256 * 1024
SHA256_PROBE_BYTES = 256 * 1024 * 1024
SHA256_PROBE_PASSES = 5


def round_(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


@dataclass
class PathResult:
    """The samples of one path (direct, cold, warm) by one method."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        """The median over the samples, which shrugs off one noisy run."""
        return statistics.median(s.seconds for s in self.samples) if self.samples else None

    def to_json(self) -> dict[str, Any]:
        seconds = self.seconds
        size = self.samples[0].size_bytes if self.samples else None
        return {
            "seconds": round_(seconds),
            "mb_per_s": round_(size / seconds / MB) if seconds and size else None,
            "samples": [
                {k: round_(v) for k, v in {**asdict(s), "mb_per_s": s.mb_per_s}.items()}
                for s in self.samples
            ],
        }


def method_json(paths: dict[str, PathResult]) -> dict[str, Any]:
    entry: dict[str, Any] = {path: paths[path].to_json() for path in PATHS}
    direct = paths["direct"].seconds
    for path in ("cold", "warm"):
        seconds = paths[path].seconds
        # A throughput ratio: above 1 is faster than straight from the registry.
        ratio = direct / seconds if direct and seconds else None
        entry[f"ratio_{path}_vs_direct"] = round_(ratio, 3)
    return entry


# Facts about the run ---------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else ""


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.partition(":")[2].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_total_bytes": meminfo().get("MemTotal"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "curl": _first_line(["curl", "--version"]),
        "containerd": _first_line(["containerd", "--version"]),
        "docker_registry": _first_line(["docker-registry", "--version"]),
    }


def code_state(directories: Sequence[str] = MEASURED_CODE) -> dict[str, Any]:
    """Which code ran: the commit, files changed since, and a hash of the sources.

    ``directories`` are the packages whose speed is measured (the peer's by default).
    """
    sources = hashlib.sha256()
    for directory in directories:
        for path in sorted((REPO_ROOT / directory).rglob("*.py")):
            sources.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
            sources.update(path.read_bytes())
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *directories],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=REPO_ROOT,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        status = ""
    return {
        "git_commit": _first_line(["git", "rev-parse", "HEAD"]),
        "uncommitted_changes": [line[3:] for line in status.splitlines() if line.strip()],
        "sources_sha256": sources.hexdigest(),
    }


# The cold path's ceiling ---------------------------------------------------------------


def sha256_bytes_per_s() -> float:
    """How fast one core hashes with sha256 here (median of a few passes).

    A cold peer may stream a blob before its digest is checked, but not its last byte:
    that waits for the blob's sha256, one sequential pass over every byte. So a cold
    transfer takes at least size / this rate, whatever else the peer does. The rate is
    the cache-warm one, the fastest: the ceiling it gives is an upper bound."""
    chunk = os.urandom(SHA256_PROBE_CHUNK_BYTES)
    rates = []
    for _ in range(SHA256_PROBE_PASSES):
        digest = hashlib.sha256()
        started = time.perf_counter()
        for _ in range(SHA256_PROBE_BYTES // len(chunk)):
            digest.update(chunk)
        rates.append(SHA256_PROBE_BYTES / (time.perf_counter() - started))
    return statistics.median(rates)


def cold_ceiling(kinds: dict[str, Any], size_bytes: int, sha256_rate: float) -> dict[str, Any]:
    """Per data dir: the best cold raw GET ratio verification allows on this machine."""
    hash_s = size_bytes / sha256_rate
    ceiling: dict[str, Any] = {
        "sha256_mb_per_s": round_(sha256_rate / MB, 1),
        "sha256_of_layer_s": round_(hash_s),
        "meaning": "the layer's sha256 alone takes sha256_of_layer_s on one core; the last "
        "byte waits for it, so cold raw GET / direct is at most direct seconds / that",
    }
    for kind, result in kinds.items():
        direct = result.get(TARGET_METHOD, {}).get("direct", {}).get("seconds")
        if direct:
            ceiling[f"{kind}_cold_ratio_max"] = round_(min(1.0, direct / hash_s), 3)
    return ceiling


# Targets and table -------------------------------------------------------------------


def target_check(kinds: dict[str, Any]) -> dict[str, Any]:
    """The targets apply to the tmpfs run's raw GET; say plainly whether each is met."""
    result = kinds.get(TARGET_KIND)
    if not result or "skipped" in result or TARGET_METHOD not in result:
        return {"evaluated": False, "reason": f"no {TARGET_KIND} {TARGET_METHOD} run"}
    method = result[TARGET_METHOD]
    cold, warm = method["ratio_cold_vs_direct"], method["ratio_warm_vs_direct"]
    rss = result["peer_peak_rss_bytes"]
    return {
        "evaluated": True,
        "applies_to": f"{TARGET_KIND} data dir, {METHOD_TITLES[TARGET_METHOD]}",
        "cold_ratio": _check(cold, f">= {TARGET_COLD_RATIO}", lambda v: v >= TARGET_COLD_RATIO),
        "warm_ratio": _check(warm, f">= {TARGET_WARM_RATIO}", lambda v: v >= TARGET_WARM_RATIO),
        "peak_rss_bytes": _check(
            rss, f"< {TARGET_PEAK_RSS_BYTES}", lambda v: v < TARGET_PEAK_RSS_BYTES
        ),
    }


def _check(measured: float | None, target: str, passes: Callable[[float], bool]) -> dict[str, Any]:
    return {
        "target": target,
        "measured": measured,
        "met": measured is not None and passes(measured),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"Starling mirror benchmark: one {report['layer_size']} layer, "
        f"{machine['nproc']} CPUs, {format_size(machine['memory_total_bytes'])} RAM. "
        "Seconds are medians; MB = 10^6 bytes; x direct is throughput / direct throughput.",
        "",
        f"{'data dir':<8} {'method':<9} {'path':<7} {'seconds':>8} {'MB/s':>7} "
        f"{'x direct':>8} {'peer CPU s':>10} {'host busy':>9} {'n':>2}",
    ]
    for kind, result in report["kinds"].items():
        if "skipped" in result:
            lines.append(f"{kind:<8} skipped: {result['skipped']}")
            continue
        for method, title in METHOD_TITLES.items():
            if method not in result:
                continue
            entry = result[method]
            for path in PATHS:
                cell = entry[path]
                samples = cell["samples"]
                ratio = (
                    1.0 if path == "direct" and samples else entry.get(f"ratio_{path}_vs_direct")
                )
                cpus = [s["peer_cpu_s"] for s in samples if s["peer_cpu_s"] is not None]
                busy = [s["host_cpu_busy"] for s in samples if s["host_cpu_busy"] is not None]
                lines.append(
                    f"{kind:<8} {title:<9} {path:<7} {_fmt(cell['seconds'], '.2f'):>8} "
                    f"{_fmt(cell['mb_per_s'], '.0f'):>7} {_fmt(ratio, '.2f'):>8} "
                    f"{_fmt(statistics.median(cpus) if cpus else None, '.2f'):>10} "
                    f"{_fmt(statistics.median(busy) * 100 if busy else None, '.0f') + '%':>9} "
                    f"{len(samples):>2}"
                )
        rss = result["peer_peak_rss_bytes"]
        rss_text = f"{format_size(rss)} ({rss / MB:.0f} MB)" if rss else "n/a"
        lines.append(f"{kind:<8} peer peak RSS (VmHWM, max over its peers): {rss_text}")
        for error in result["errors"]:
            lines.append(f"{kind:<8} ERROR {error}")
    ceiling = report.get("cold_ceiling")
    if ceiling:
        maxima = ", ".join(
            f"{key.removesuffix('_cold_ratio_max')} {value:.2f}x"
            for key, value in ceiling.items()
            if key.endswith("_cold_ratio_max")
        )
        lines.append(
            f"Cold ceiling: one core hashes {ceiling['sha256_mb_per_s']:.0f} MB/s of sha256, "
            f"so the layer's digest alone takes {ceiling['sha256_of_layer_s']:.2f} s and a "
            f"cold raw GET can reach at most {maxima} direct here."
        )
    lines.append("")
    targets = report["targets"]
    if targets.get("evaluated"):
        lines.append(f"Targets ({targets['applies_to']}):")
        for name, check in targets.items():
            if isinstance(check, dict):
                verdict = "met" if check["met"] else "NOT met"
                lines.append(
                    f"  {name}: {verdict} (target {check['target']}, measured {check['measured']})"
                )
    else:
        lines.append(f"Targets not evaluated: {targets.get('reason')}")
    quiet = report["host"]["busy_before"]
    if quiet > 0.1:
        lines.append(
            f"WARNING: {quiet:.0%} of the CPUs were busy just before the run; other load on "
            "the machine may skew these figures (see host_cpu_busy of each sample)."
        )
    shmem = report["host"].get("shmem_before_bytes", 0)
    if shmem > SHMEM_WARNING_BYTES:
        lines.append(
            f"WARNING: {format_size(shmem)} of tmpfs (RAM) was held by other files before the "
            "run; the tmpfs figures may be skewed (11 GiB of leftovers once took a warm "
            "ctr images pull from 0.95x to 0.83x direct)."
        )
    if report["code_changed_during_run"]:
        lines.append(
            "WARNING: peer or registry_proxy sources changed during the run; "
            "later peers may have run other code."
        )
    lines.append(f"The benchmark took {report['duration_s']:.0f}s.")
    return "\n".join(lines)
