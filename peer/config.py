"""Peer daemon settings: one YAML file, environment overrides, command-line flags.

Unknown keys are an error, so a typo never silently falls back to a default. Sizes
accept units (``cache_quota: 20GiB``). Every default works on a single machine.
The ``tls`` block is the one the scheduler takes too (``cluster_tls``, docs/tls.md).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from cluster_tls import TLSSettings, load_tls
from peer.pieces import DEFAULT_MAX_PIECE_BYTES, DEFAULT_MIN_PIECE_BYTES, DEFAULT_TARGET_PIECES
from peer.sizes import parse_size
from peer.upload_slots import upload_slots_for
from registry_proxy.upstream import UpstreamConfig

GiB = 1024**3
_HOST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
T = TypeVar("T")
ENV_PREFIX = "STARLING_"


class ConfigError(ValueError):
    """The configuration file, environment or flags are invalid."""


def default_data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/starling/peer"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "starling" / "peer")


@dataclass(frozen=True)
class PeerConfig:
    listen: str = "127.0.0.1:65001"
    data_dir: str = field(default_factory=default_data_dir)
    cache_quota_bytes: int = 20 * GiB
    min_piece_bytes: int = DEFAULT_MIN_PIECE_BYTES
    max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES
    target_pieces: int = DEFAULT_TARGET_PIECES
    # Range requests in flight per blob when downloading from the registry.
    origin_concurrency: int = 4
    # Attempts per piece before the download fails.
    piece_attempts: int = 3
    # A client response that gets no new byte for this long is ended short, so the
    # client resumes with a Range request instead of hanging.
    stall_timeout_s: float = 20.0
    log_level: str = "info"
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)

    # Peer-to-peer. Without a scheduler the peer is a caching mirror on its own.
    # Base URL of p2p-scheduler, e.g. http://127.0.0.1:8002; several replicas as a
    # comma-separated list (or a YAML list): the live ones are learned from any of them.
    scheduler: str | None = None
    token: str | None = None  # cluster token: scheduler API and piece server
    piece_listen: str = "127.0.0.1:65002"
    # Address other peers use to reach the piece server (default: piece_listen's host).
    advertise_address: str | None = None
    # Port other peers use, when it differs from the bound one (port mapping, a proxy).
    advertise_port: int = 0
    host_id: str = field(default_factory=socket.gethostname)
    seed: bool = False  # seed peers go to the registry first and keep what they fetch
    idc: str = ""
    rack: str = ""
    location: str = ""  # "a|b|c", most general first
    upload_capacity_bps: float = 1.25e9  # announced to the scheduler, bytes per second
    download_capacity_bps: float = 1.25e9
    # Concurrent piece uploads (more are refused with 503), and children per blob the
    # scheduler gives this peer. 0: from upload_capacity_bps (peer.upload_slots).
    upload_slots: int = 0
    upload_rate_bps: float = 0.0  # cap on piece upload bytes per second; 0: none
    pieces_in_flight: int = 8  # piece requests to parents at once, per blob
    announce_interval_s: float = 10.0
    # TLS for the piece server, and for this peer's calls to other peers and the
    # scheduler (then https, whatever scheme ``scheduler`` is written with). The registry
    # mirror stays plain HTTP on ``listen``: containerd reaches it on loopback.
    tls: TLSSettings | None = None

    def __post_init__(self) -> None:
        _host_port(self.listen, "listen")
        _host_port(self.piece_listen, "piece_listen")
        if not _HOST_ID_RE.fullmatch(self.host_id):
            raise ConfigError(
                f"host_id {self.host_id!r}: use letters, digits, '.', '_' and '-' (at most 128)"
            )
        if self.upload_slots < 0:
            raise ConfigError("upload_slots must be at least 1, or 0 to follow the upload capacity")
        if self.pieces_in_flight < 1:
            raise ConfigError("pieces_in_flight must be at least 1")
        if not self.min_piece_bytes <= self.max_piece_bytes:
            raise ConfigError("min_piece_bytes must not exceed max_piece_bytes")
        for name in ("origin_concurrency", "piece_attempts", "target_pieces", "min_piece_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.stall_timeout_s <= 0:
            raise ConfigError("stall_timeout_s must be positive")
        if self.scheduler is not None:
            urls = [url.strip() for url in self.scheduler.split(",") if url.strip()]
            if not urls or not all(url.startswith(("http://", "https://")) for url in urls):
                raise ConfigError(
                    f"scheduler: expected http(s) URLs, comma-separated; got {self.scheduler!r}"
                )

    @property
    def upload_slot_count(self) -> int:
        """``upload_slots``, or the count the upload capacity calls for when it is 0."""
        return self.upload_slots or upload_slots_for(self.upload_capacity_bps)

    @property
    def listen_host(self) -> str:
        return _host_port(self.listen, "listen")[0]

    @property
    def listen_port(self) -> int:
        return _host_port(self.listen, "listen")[1]

    @property
    def piece_host(self) -> str:
        return _host_port(self.piece_listen, "piece_listen")[0]

    @property
    def piece_port(self) -> int:
        return _host_port(self.piece_listen, "piece_listen")[1]


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def load_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> PeerConfig:
    """Settings from the file at ``path`` (if any), then ``STARLING_*`` env, then flags."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = loaded
    for key in ("listen", "data_dir", "scheduler", "token"):
        env = os.environ.get(ENV_PREFIX + key.upper())
        if env:
            raw[key] = env
    if isinstance(raw.get("scheduler"), list):
        raw["scheduler"] = ",".join(str(url) for url in raw["scheduler"])
    upstream_raw = dict(raw.pop("upstream", None) or {})
    tls_raw = raw.pop("tls", None)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "insecure_registries":
            merged = list(upstream_raw.get("insecure_registries", [])) + list(value)
            upstream_raw["insecure_registries"] = merged
        elif key == "default_registry":
            upstream_raw[key] = value
        else:
            raw[key] = value
    try:
        return build_dataclass(
            PeerConfig,
            raw,
            upstream=build_dataclass(UpstreamConfig, upstream_raw),
            tls=load_tls(tls_raw, os.environ),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def build_dataclass(cls: type[T], raw: Mapping[str, Any], **fixed: Any) -> T:
    """Construct ``cls`` from a mapping: unknown keys are errors, sizes and tuples coerced."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = dict(fixed)
    for key, value in raw.items():
        # Size fields may be written without the unit suffix: cache_quota: 20GiB.
        name = key if key in fields else f"{key}_bytes"
        if name not in fields or name in fixed:
            known = ", ".join(sorted(fields))  # the fixed ones are sections (upstream, tls)
            raise ConfigError(f"unknown setting {key!r} for {cls.__name__}; known: {known}")
        values[name] = _coerce(name, fields[name], value)
    return cls(**values)


def _coerce(name: str, spec: dataclasses.Field[Any], value: Any) -> Any:
    annotation = str(spec.type)
    if name.endswith("_bytes"):
        return parse_size(value)
    if annotation.startswith("tuple"):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list")
        return tuple(str(v) for v in value)
    if annotation.startswith("Mapping"):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping")
        return MappingProxyType({str(k): str(v) for k, v in value.items()})
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false")
        return value
    if annotation == "str | None":
        return None if value is None else str(value)
    if annotation == "float":
        return float(value)
    if annotation == "int":
        return int(value)
    if annotation == "str":
        return str(value)
    return value
