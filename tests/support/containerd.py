"""A private containerd daemon, plus ``ctr`` helpers and hosts.toml writing.

Each instance has its own root, state, config and gRPC socket, and disables every plugin
that would touch the host (CRI, cgroup monitor, runtimes, kernel-specific snapshotters).
Pulls use the ``native`` snapshotter, which only copies files, so unpacking needs no
overlayfs. Running it needs root (containerd refuses otherwise and mounts during unpack).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .images import host_architecture
from .polling import POLL_INTERVAL_S
from .processes import LoggedProcess, ProcessFailed

CONTAINERD_BINARY = "containerd"
CTR_BINARY = "ctr"
START_TIMEOUT_S = 20.0
SNAPSHOTTER = "native"

# Plugins that reach outside the temp dir or need kernel features a test box may lack.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.internal.v1.restart",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.zfs",
)

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


class ContainerdUnavailable(RuntimeError):
    """This machine cannot run the containerd fixture (not root, binaries missing)."""


def containerd_unavailable_reason() -> str | None:
    """Why the containerd fixture cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "containerd fixture needs root"
    for binary in (CONTAINERD_BINARY, CTR_BINARY):
        if shutil.which(binary) is None:
            return f"{binary} not installed (Debian package containerd)"
    return None


def _toml_str(value: str) -> str:
    # JSON string escaping is valid TOML basic-string escaping for these paths and URLs.
    return json.dumps(value)


def write_hosts_toml(
    hosts_dir: Path,
    registry_host: str,
    mirrors: list[str],
    server_url: str | None = None,
) -> Path:
    """Write ``hosts_dir/<registry_host>/hosts.toml`` and return its path.

    ``mirrors`` are tried in order before ``server``; each may be ``host:port`` (taken as
    plain http) or a full URL. containerd adds ``?ns=<registry_host>`` to mirror requests.
    Without ``server_url`` containerd falls back to the registry host itself.
    """
    if not mirrors and server_url is None:
        raise ValueError("hosts.toml needs a server_url or at least one mirror")
    lines: list[str] = []
    if server_url is not None:
        lines += [f"server = {_toml_str(server_url)}", ""]
    if not mirrors and server_url is not None:
        # containerd 1.6 rejects a hosts.toml without any [host] table ("invalid `host`
        # tree"), logs it, and silently falls back to its defaults. Naming the server as
        # its own host keeps the file valid; it is only tried twice if it fails.
        lines += [
            f"[host.{_toml_str(server_url)}]",
            '  capabilities = ["pull", "resolve", "push"]',
            "",
        ]
    for mirror in mirrors:
        url = mirror if "://" in mirror else f"http://{mirror}"
        lines += [
            f"[host.{_toml_str(url)}]",
            '  capabilities = ["pull", "resolve"]',
            "",
        ]
    path = hosts_dir / registry_host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


class ContainerdProcess:
    """containerd with everything under ``work_dir``, except its sockets.

    Unix socket paths are limited to 107 bytes and pytest's temp dirs are long, so the
    sockets live in a short directory of their own under the system temp dir.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.root = work_dir / "root"
        self.state = work_dir / "state"
        self.config_path = work_dir / "config.toml"
        self.log_path = work_dir / "containerd.log"
        self._socket_dir: Path | None = None
        self._process: LoggedProcess | None = None

    @property
    def address(self) -> str:
        if self._socket_dir is None:
            raise RuntimeError("containerd is not started")
        return str(self._socket_dir / "containerd.sock")

    def _config(self) -> str:
        disabled = ", ".join(_toml_str(p) for p in DISABLED_PLUGINS)
        return "\n".join(
            [
                "version = 2",
                f"root = {_toml_str(str(self.root))}",
                f"state = {_toml_str(str(self.state))}",
                f"disabled_plugins = [{disabled}]",
                "",
                "[grpc]",
                f"  address = {_toml_str(self.address)}",
                "",
                "[ttrpc]",
                f"  address = {_toml_str(self.address + '.ttrpc')}",
                "",
                # Isolated: a namespace sees only blobs it fetched itself, so each namespace
                # behaves like a separate node and a second pull really downloads again.
                '[plugins."io.containerd.metadata.v1.bolt"]',
                '  content_sharing_policy = "isolated"',
                "",
                # The opt plugin otherwise creates /opt/containerd on the host.
                '[plugins."io.containerd.internal.v1.opt"]',
                f"  path = {_toml_str(str(self.work_dir / 'opt'))}",
                "",
            ]
        )

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ContainerdProcess:
        if reason := containerd_unavailable_reason():
            raise ContainerdUnavailable(reason)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._socket_dir = Path(tempfile.mkdtemp(prefix="ctrd-"))
        self.config_path.write_text(self._config())
        process = LoggedProcess(
            [CONTAINERD_BINARY, "--config", str(self.config_path), "--log-level", "info"],
            self.log_path,
            "containerd",
        )
        self._process = process
        deadline = time.monotonic() + timeout_s
        probe_error = "socket not created yet"
        while True:
            process.check_alive()
            # Without the socket ctr would sit out its whole connect timeout, hiding a
            # daemon that already died; so probe only once the socket exists.
            if Path(self.address).exists():
                probe = subprocess.run(
                    [CTR_BINARY, "--address", self.address, "--connect-timeout", "2s", "version"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if probe.returncode == 0:
                    return self
                probe_error = probe.stderr.strip()
            if time.monotonic() >= deadline:
                raise ProcessFailed(
                    process.describe_failure(
                        f"not ready within {timeout_s:.0f} s (ctr version: {probe_error})"
                    )
                )
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        """Kill the daemon, unmount leftovers under its root, remove all of its dirs."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        self._unmount_under(self.work_dir)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)

    @staticmethod
    def _unmount_under(base: Path) -> None:
        # The native snapshotter unmounts its temporary bind mounts itself; this only
        # matters if containerd was killed in the middle of an unpack.
        prefix = str(base.resolve()) + "/"
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = [line.split()[4] for line in mountinfo if len(line.split()) > 4]
        # Deepest first, so nested mounts come off before their parents.
        for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def __enter__(self) -> ContainerdProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- ctr -------------------------------------------------------------------------

    def ctr(
        self,
        *args: str,
        namespace: str = "default",
        timeout_s: float = 120.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr --address SOCK -n NAMESPACE ARGS...`` and capture its output."""
        argv = self.ctr_argv(*args, namespace=namespace)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        if check and result.returncode != 0:
            raise ProcessFailed(
                f"{' '.join(argv)} exited with {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def ctr_argv(self, *args: str, namespace: str = "default") -> list[str]:
        """The command line ``ctr`` runs; for callers that start it themselves (the demo
        does, so it can kill a pull that is still running when it stops)."""
        return [CTR_BINARY, "--address", self.address, "-n", namespace, *args]

    def pull_args(
        self,
        ref: str,
        hosts_dir: Path | None = None,
        plain_http: bool = True,
        user: str | None = None,
    ) -> list[str]:
        """The ``ctr`` arguments of ``pull`` (for ``ctr_argv``)."""
        args = ["images", "pull", "--snapshotter", SNAPSHOTTER]
        return [*args, *self._registry_args(hosts_dir, plain_http, user), ref]

    @staticmethod
    def _registry_args(hosts_dir: Path | None, plain_http: bool, user: str | None) -> list[str]:
        args: list[str] = []
        if hosts_dir is not None:
            args += ["--hosts-dir", str(hosts_dir)]
        if plain_http:
            args.append("--plain-http")
        if user is not None:
            args += ["--user", user]
        return args

    def pull(
        self,
        ref: str,
        namespace: str = "default",
        hosts_dir: Path | None = None,
        plain_http: bool = True,
        user: str | None = None,
        timeout_s: float = 120.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr images pull --snapshotter native`` (unpacks the layers) of ``ref``.

        ``user`` is ``"name:password"``. The result is returned even on failure, so tests
        can assert that a pull is refused; pass ``check=True`` to raise instead.
        """
        args = self.pull_args(ref, hosts_dir, plain_http, user)
        return self.ctr(*args, namespace=namespace, timeout_s=timeout_s, check=check)

    def fetch(
        self,
        ref: str,
        namespace: str = "default",
        hosts_dir: Path | None = None,
        plain_http: bool = True,
        user: str | None = None,
        timeout_s: float = 120.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr content fetch``: download every blob of ``ref``, no unpack, no image record.

        Unpacking a large layer with the native snapshotter costs as much as fetching it;
        measurements of distribution alone should use this.
        """
        args = ["content", "fetch", *self._registry_args(hosts_dir, plain_http, user)]
        return self.ctr(*args, ref, namespace=namespace, timeout_s=timeout_s, check=check)

    def image_digest(self, ref: str, namespace: str = "default") -> str:
        """The manifest (or index) digest containerd recorded for ``ref``."""
        listing = self.ctr("images", "ls", namespace=namespace, check=True).stdout
        for line in listing.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise KeyError(f"{ref} is not an image in namespace {namespace}:\n{listing}")

    def content_path(self, digest: str) -> Path:
        """Where the content store keeps a blob; compare it with what was pushed."""
        algorithm, _, hex_digest = digest.partition(":")
        return self.root / "io.containerd.content.v1.content" / "blobs" / algorithm / hex_digest

    def read_json_blob(self, digest: str, namespace: str = "default") -> Any:
        return json.loads(
            self.ctr("content", "get", digest, namespace=namespace, check=True).stdout
        )

    def image_manifest(self, ref: str, namespace: str = "default") -> dict[str, Any]:
        """The image manifest of ``ref``, choosing this host's platform from an index."""
        document: dict[str, Any] = self.read_json_blob(self.image_digest(ref, namespace), namespace)
        if document.get("mediaType") in MANIFEST_MEDIA_TYPES or "layers" in document:
            return document
        for entry in document.get("manifests", []):
            platform = entry.get("platform", {})
            if platform.get("architecture") == host_architecture():
                chosen: dict[str, Any] = self.read_json_blob(entry["digest"], namespace)
                return chosen
        raise KeyError(f"{ref}: no manifest for {host_architecture()} in its index")

    def image_layer_digests(self, ref: str, namespace: str = "default") -> list[str]:
        return [layer["digest"] for layer in self.image_manifest(ref, namespace)["layers"]]

    def content_digests(self, namespace: str = "default") -> set[str]:
        """Digests of every blob in the namespace's content store."""
        out = self.ctr("content", "ls", "-q", namespace=namespace, check=True).stdout
        return {line.strip() for line in out.splitlines() if line.strip()}
