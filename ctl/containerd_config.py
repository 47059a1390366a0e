"""``hosts.toml`` files that make containerd pull through the Starling peer on its node.

containerd reads ``<config_path>/<registry>/hosts.toml`` (or ``_default/hosts.toml`` for
every registry without a directory of its own) on each pull, so no restart is needed.
Each file names the peer's registry mirror as a host to try first and the registry as
the fallback ``server``: when the peer answers an error or is not running, containerd
goes to the registry. ``dial_timeout`` (containerd 1.7 and later; older releases ignore
it) keeps a mirror that does not answer connection attempts from costing containerd's
default 30 seconds per request.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_DIR = "/etc/containerd/certs.d"
DEFAULT_MIRROR = "http://127.0.0.1:65001"
# The mirror runs on the same node: a live one accepts a connection in microseconds.
DEFAULT_DIAL_TIMEOUT = "200ms"
DEFAULT_REGISTRY_DIR = "_default"
# The first line of every file this module writes; a file without it is someone else's.
MARKER = "# Written by p2pctl containerd-config."

_REGISTRY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?")
_DURATION_RE = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+")
_MIRROR_RE = re.compile(r"https?://[^/\s?#]+/?")


class ContainerdConfigError(ValueError):
    """An argument is invalid, or a file is in the way."""


@dataclass(frozen=True)
class HostsFile:
    registry: str  # a registry host[:port], or "_default"
    server: str | None  # the fallback; None lets containerd use the registry itself
    mirror: str
    dial_timeout: str

    def render(self) -> str:
        lines = [
            MARKER,
            f"# containerd tries the Starling peer at {self.mirror} first and falls back",
            "# to the registry when the peer fails or is not running.",
        ]
        if self.server is not None:
            lines += [f"server = {_toml_str(self.server)}"]
        lines += [
            "",
            f"[host.{_toml_str(self.mirror)}]",
            '  capabilities = ["pull", "resolve"]',
            f"  dial_timeout = {_toml_str(self.dial_timeout)}",
            "",
        ]
        return "\n".join(lines)


def _toml_str(value: str) -> str:
    # JSON string escaping is valid TOML basic-string escaping for hosts and URLs.
    return json.dumps(value)


def server_for(registry: str, insecure: bool) -> str | None:
    """The registry's own endpoint, which containerd falls back to."""
    if registry == DEFAULT_REGISTRY_DIR:
        return None  # containerd falls back to whichever registry the image names
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    return f"{'http' if insecure else 'https'}://{registry}"


def hosts_files(
    registries: Iterable[str],
    mirror: str = DEFAULT_MIRROR,
    dial_timeout: str = DEFAULT_DIAL_TIMEOUT,
    insecure_registries: Iterable[str] = (),
) -> list[HostsFile]:
    """One file per registry, checked; raises :class:`ContainerdConfigError`."""
    if not _MIRROR_RE.fullmatch(mirror):
        raise ContainerdConfigError(
            f"mirror {mirror!r}: expected http://HOST:PORT or https://HOST:PORT"
        )
    if not _DURATION_RE.fullmatch(dial_timeout):
        raise ContainerdConfigError(
            f"dial timeout {dial_timeout!r}: expected a duration such as 200ms or 1s"
        )
    insecure = set(insecure_registries)
    files = []
    for registry in dict.fromkeys(registries):  # unique, in order
        if registry != DEFAULT_REGISTRY_DIR and not _REGISTRY_RE.fullmatch(registry):
            raise ContainerdConfigError(
                f"registry {registry!r}: expected a host name with an optional port "
                f"(docker.io, registry.example.com:5000) or {DEFAULT_REGISTRY_DIR}"
            )
        server = server_for(registry, registry in insecure)
        files.append(HostsFile(registry, server, mirror.rstrip("/"), dial_timeout))
    unknown = insecure - {f.registry for f in files}
    if unknown:
        raise ContainerdConfigError(
            f"--insecure-registry names registries not being configured: {sorted(unknown)}"
        )
    return files


def write_hosts_files(config_dir: Path, files: Iterable[HostsFile], force: bool) -> list[Path]:
    """Write every file atomically; returns their paths.

    A ``hosts.toml`` this command did not write is only replaced with ``force``: it may
    hold credentials or mirrors someone configured by hand. Every file is checked before
    any is written, so a refusal leaves the directory as it was.
    """
    files = list(files)
    paths = [config_dir / f.registry / "hosts.toml" for f in files]
    for path in paths:
        if not force and path.exists() and not _ours(path):
            raise ContainerdConfigError(
                f"{path} exists and was not written by p2pctl; move it away or pass --force"
            )
    for path, hosts_file in zip(paths, files, strict=True):
        _write_atomically(path, hosts_file.render())
    return paths


def _ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return file.readline().rstrip("\n") == MARKER
    except OSError:
        return False


def _write_atomically(path: Path, text: str) -> None:
    # containerd reads the file on every pull: it must never see half of one.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".hosts.toml.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
