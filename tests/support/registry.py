"""A real CNCF distribution registry (Debian ``docker-registry``) on an ephemeral port."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .ports import free_port, wait_http
from .processes import LoggedProcess, ProcessFailed
from .token_server import TokenServer

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT_S = 15.0
# free_port() can race with another process grabbing the port before the registry binds
# it; a few attempts make that harmless.
START_ATTEMPTS = 3

__all__ = [
    "REGISTRY_BINARY",
    "RegistryProcess",
    "TokenRegistry",
    "TokenServer",
    "registry_unavailable_reason",
    "start_token_registry",
]


def registry_unavailable_reason() -> str | None:
    """Why the registry fixture cannot run here, or None when it can."""
    if shutil.which(REGISTRY_BINARY) is None:
        return f"{REGISTRY_BINARY} not installed (Debian package docker-registry)"
    return None


class RegistryProcess:
    """``docker-registry serve CONFIG`` with filesystem storage under ``work_dir``.

    With a ``token_server`` the registry requires bearer tokens from it; the token server
    must already be started because its URL goes into the registry config.
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        token_server: TokenServer | None = None,
        extra_config: dict[str, Any] | None = None,
    ):
        self._own_work_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="registry-")) if work_dir is None else work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.token_server = token_server
        # Top-level config sections added as they are (e.g. storage middleware).
        self.extra_config = extra_config or {}
        self.storage_dir = self.work_dir / "storage"
        self.config_path = self.work_dir / "config.yml"
        self.log_path = self.work_dir / "registry.log"
        self.port: int | None = None
        self._process: LoggedProcess | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of image references and hosts.toml names."""
        if self.port is None:
            raise RuntimeError("registry is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _config(self, port: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                # Upload purging runs a background walk we do not want racing the tests.
                "maintenance": {"uploadpurging": {"enabled": False}},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {
                "addr": f"127.0.0.1:{port}",
                # A fixed secret silences the "generating a random secret" warning.
                "secret": "starling-test-registry-secret",
            },
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.token_server is not None:
            bundle = self.work_dir / "token-root.pem"
            config["auth"] = self.token_server.registry_auth_config(bundle)
        config.update(self.extra_config)
        return config

    def start(self, timeout_s: float = START_TIMEOUT_S) -> RegistryProcess:
        if reason := registry_unavailable_reason():
            raise ProcessFailed(reason)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        last_error: ProcessFailed | None = None
        for _attempt in range(START_ATTEMPTS):
            port = free_port()
            self.config_path.write_text(yaml.safe_dump(self._config(port), sort_keys=False))
            process = LoggedProcess(
                [REGISTRY_BINARY, "serve", str(self.config_path)], self.log_path, "docker-registry"
            )
            try:
                # /v2/ answers 200, or 401 with token auth: any HTTP answer means ready.
                wait_http(f"http://127.0.0.1:{port}/v2/", timeout_s, check=process.check_alive)
            except ProcessFailed as exc:
                process.stop()
                last_error = exc
                if "address already in use" in str(exc):
                    continue
                raise
            except TimeoutError as exc:
                process.stop()
                raise ProcessFailed(process.describe_failure(str(exc))) from exc
            self.port = port
            self._process = process
            return self
        assert last_error is not None
        raise last_error

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        else:
            # Blob storage can be gigabytes; the config and log stay for post-mortems.
            shutil.rmtree(self.storage_dir, ignore_errors=True)

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class TokenRegistry:
    """A registry behind token auth, with the one user that may pull and push."""

    registry: RegistryProcess
    token_server: TokenServer
    username: str
    password: str

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)

    def stop(self) -> None:
        self.registry.stop()
        self.token_server.stop()


def start_token_registry(
    work_dir: Path | None = None,
    username: str = "starling",
    password: str = "s3cret-pull-password",
) -> TokenRegistry:
    """Start a token server and a registry that trusts it."""
    token_server = TokenServer({username: password}).start()
    try:
        registry = RegistryProcess(work_dir, token_server=token_server).start()
    except BaseException:
        token_server.stop()
        raise
    return TokenRegistry(registry, token_server, username, password)
