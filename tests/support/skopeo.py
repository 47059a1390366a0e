"""``skopeo copy`` from a registry (optionally through a mirror) into a ``dir:`` layout.

A second, independent client: containers/image resolves mirrors from registries.conf,
not from containerd's hosts.toml, so a mirror that works for both is not tuned to one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from .processes import ProcessFailed

SKOPEO_BINARY = "skopeo"


def skopeo_unavailable_reason() -> str | None:
    if shutil.which(SKOPEO_BINARY) is None:
        return f"{SKOPEO_BINARY} not installed (Debian package skopeo)"
    return None


def write_registries_conf(path: Path, registry_host: str, mirror_host: str | None = None) -> Path:
    """A v2 registries.conf that marks the registry (and its mirror) as plain-http."""
    lines = [
        # No short-name search: a reference must name its registry.
        "unqualified-search-registries = []",
        "",
        "[[registry]]",
        f"location = {json.dumps(registry_host)}",
        "insecure = true",
    ]
    if mirror_host is not None:
        lines += [
            "",
            "[[registry.mirror]]",
            f"location = {json.dumps(mirror_host)}",
            "insecure = true",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def skopeo_copy(
    src_ref: str,
    dest_dir: Path,
    registries_conf_mirror: tuple[str, str] | None = None,
    creds: tuple[str, str] | None = None,
    timeout_s: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Copy ``docker://src_ref`` to ``dir:dest_dir``.

    ``registries_conf_mirror`` is ``(registry_host, mirror_host)``: pulls of that registry
    go to the mirror first (containers/image falls back to the registry if it fails).
    """
    registry_host = src_ref.split("/", 1)[0]
    mirror_host = None
    if registries_conf_mirror is not None:
        registry_host, mirror_host = registries_conf_mirror
    with tempfile.TemporaryDirectory(prefix="skopeo-") as scratch:
        conf = write_registries_conf(Path(scratch) / "registries.conf", registry_host, mirror_host)
        argv = [
            SKOPEO_BINARY,
            # The host's policy.json may demand signatures; tests copy unsigned images.
            "--insecure-policy",
            "--tmpdir",
            scratch,
            "copy",
            "--registries-conf",
            str(conf),
            "--src-tls-verify=false",
        ]
        argv += ["--src-creds", f"{creds[0]}:{creds[1]}"] if creds else ["--src-no-creds"]
        argv += [f"docker://{src_ref}", f"dir:{dest_dir}"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise ProcessFailed(
            f"{' '.join(argv)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
