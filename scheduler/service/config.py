"""Scheduler service settings: one YAML file, environment overrides, command-line flags.

Precedence, lowest first: defaults, the YAML file, the environment
(``STARLING_SCHEDULER_LISTEN``, ``STARLING_TOKEN``, ``STARLING_REDIS_URL``,
``STARLING_SCHEDULER_ADVERTISE_URL``, and ``STARLING_TLS_*`` for the ``tls`` block),
flags. Unknown keys are an error, so a typo never silently falls back to a default. The
cluster token is a secret: the YAML file and the flag name a file that holds it
(``token_file``), the environment may carry it directly, and it never appears in a
``repr``. Every default works on one machine.

Example::

    listen: 0.0.0.0:8002
    host_ttl_s: 30
    upkeep_interval_s: 5
    token_file: /etc/starling/token
    log_level: info
    # Several replicas: each registers in Redis and peers route tasks over the live ones.
    # Transfer records and the published model are shared there too.
    redis_url: redis://redis:6379/0
    advertise_url: http://10.0.0.5:8002
    # The learned evaluator, retrained hourly on the cluster's own records
    # (docs/learned-scoring.md).
    evaluator: learned
    records_redis_max_len: 100000
    retrain_interval_s: 3600
    scheduling:
      parents_per_decision: 4
      back_to_source_quota: 1
    # TLS for the API: the same block as in the peers' config (cluster_tls, docs/tls.md).
    tls:
      cert_file: /etc/starling/tls/tls.crt
      key_file: /etc/starling/tls/tls.key
      ca_file: /etc/starling/tls/ca.crt
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cluster_tls import TLSConfigError, TLSSettings, load_tls
from scheduler.core import SchedulerSettings
from scheduler.service.errors import ConfigError

ENV_LISTEN = "STARLING_SCHEDULER_LISTEN"
ENV_TOKEN = "STARLING_TOKEN"
ENV_REDIS_URL = "STARLING_REDIS_URL"
ENV_ADVERTISE_URL = "STARLING_SCHEDULER_ADVERTISE_URL"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
LOG_LEVELS = ("debug", "info", "warning", "error")
# What may appear in an ``Authorization: Bearer`` header value: visible ASCII, no spaces.
_TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")
# Top-level YAML keys read apart from the typed fields, and the scheduling keys that are
# set elsewhere.
_FILE_ONLY_KEYS = ("token_file", "scheduling", "tls")
_SCHEDULING_KEYS_ELSEWHERE = {"host_ttl_s": "set host_ttl_s at the top level"}


@dataclass(frozen=True)
class SchedulerConfig:
    listen: str = "127.0.0.1:8002"
    # Hosts that do not announce again within this long are expired with their peers.
    # Returned to every announcing host so it knows how often to announce.
    host_ttl_s: float = 30.0
    # How often the writer looks for expired hosts: expiry happens between host_ttl_s and
    # host_ttl_s + upkeep_interval_s after the last announcement.
    upkeep_interval_s: float = 5.0
    # Seed of the scheduler's random.Random; None draws one from the OS. Tests fix it.
    rng_seed: int | None = None
    # The cluster token every /api/v1 request must carry; None accepts any request.
    token: str | None = field(default=None, repr=False)
    log_level: str = "info"
    # The core's tunables; their host_ttl_s is replaced by the one above.
    scheduling: SchedulerSettings = field(default_factory=SchedulerSettings)
    # Replicas. With a Redis URL the scheduler registers itself there with a heartbeat and
    # serves the live replicas at GET /api/v1/replicas; peers route each task to one of
    # them. None: a scheduler on its own, nothing shared. The URL may hold a password.
    redis_url: str | None = field(default=None, repr=False)
    # The URL peers reach this replica at (its name in Redis); default: the listen address
    # (the hostname instead of a wildcard address).
    advertise_url: str | None = None
    # Heartbeat period, and how long a replica stays listed after its last heartbeat.
    replica_heartbeat_s: float = 1.0
    replica_ttl_s: float = 5.0
    # Prefix of every Redis key, so several clusters can share one Redis.
    redis_key_prefix: str = "starling:"
    # Parent scoring (scheduler/service/models.py): "learned" scores with the model at
    # model_path (None: the model shipped in the package) and falls back to "rule",
    # loudly, without a valid model. The model file is reloaded when it changes.
    # "rule" is the default until a learned model beats it on held-out clusters: the
    # shipped one does not yet (docs/learned-scoring.md).
    evaluator: str = "rule"
    model_path: str | None = None
    model_reload_s: float = 10.0
    # Share of decisions randomized among the model's top candidates (recorded with its
    # probability), so the records do not only reflect the model's own choices.
    exploration: float = 0.02
    # Transfer records (training data) as JSON lines in this directory, rotated; None:
    # none kept in files. records_cluster names this cluster in them (training holds
    # whole clusters out).
    records_dir: str | None = None
    records_cluster: str = "default"
    records_flush_s: float = 1.0
    # With redis_url, records also go to the Redis stream {redis_key_prefix}records,
    # capped at about this many (the oldest go first; ~1 KB each); 0: none in Redis.
    # With redis_url, models are published to and loaded from Redis, not model_path
    # (scheduler/service/stores.py has the whole rule).
    records_redis_max_len: int = 100_000
    # Records a failing store (Redis down) keeps in memory to retry; beyond, dropped.
    records_backlog_max: int = 10_000
    # Scheduled retraining (scheduler/service/retraining.py): every this many seconds one
    # replica fits a candidate on the newest retrain_records records and publishes it only
    # if it beats the current model on the newest ones, held out. None: off. Needs
    # records (in Redis or records_dir) and somewhere to publish (redis_url or model_path).
    retrain_interval_s: float | None = None
    retrain_records: int = 200_000
    # HTTPS for the API with these PEM files (cluster_tls); None: plain HTTP.
    tls: TLSSettings | None = None

    def __post_init__(self) -> None:
        _host_port(self.listen, "listen")
        for name in (
            "host_ttl_s",
            "upkeep_interval_s",
            "replica_heartbeat_s",
            "replica_ttl_s",
            "model_reload_s",
            "records_flush_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.token is not None and not _TOKEN_PATTERN.fullmatch(self.token):
            raise ConfigError("the token must be visible ASCII characters without spaces")
        if self.evaluator not in ("learned", "rule"):
            raise ConfigError(f"evaluator must be 'learned' or 'rule', got {self.evaluator!r}")
        if not 0.0 <= self.exploration <= 1.0:
            raise ConfigError(f"exploration must be in [0, 1], got {self.exploration!r}")
        self._check_learning()
        if self.replica_ttl_s < 2 * self.replica_heartbeat_s:
            # One late or lost heartbeat must not make a live replica disappear.
            raise ConfigError("replica_ttl_s must be at least twice replica_heartbeat_s")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ConfigError(f"redis_url must start with {', '.join(REDIS_SCHEMES)}")
        if self.advertise_url is not None and not re.fullmatch(
            r"https?://[^/\s]+", self.advertise_url.rstrip("/")
        ):
            raise ConfigError(
                f"advertise_url: expected http(s)://HOST:PORT, got {self.advertise_url!r}"
            )

    def _check_learning(self) -> None:
        """The record store and retraining settings (issue 5)."""
        for name in ("records_redis_max_len", "records_backlog_max"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)!r}")
        if self.retrain_records < 1:
            raise ConfigError(f"retrain_records must be positive, got {self.retrain_records!r}")
        interval = self.retrain_interval_s
        if interval is None:
            return
        if not (math.isfinite(interval) and interval > 0):
            raise ConfigError(f"retrain_interval_s must be a positive number, got {interval!r}")
        redis_records = self.redis_url is not None and self.records_redis_max_len > 0
        if not redis_records and self.records_dir is None:
            raise ConfigError("retrain_interval_s needs records: redis_url or records_dir")
        if self.redis_url is None and self.model_path is None:
            raise ConfigError("retrain_interval_s needs redis_url or model_path to publish to")

    @property
    def listen_host(self) -> str:
        return _host_port(self.listen, "listen")[0]

    @property
    def listen_port(self) -> int:
        return _host_port(self.listen, "listen")[1]

    @property
    def core_settings(self) -> SchedulerSettings:
        """The settings the core runs with: ``scheduling`` with this config's host TTL."""
        return dataclasses.replace(self.scheduling, host_ttl_s=self.host_ttl_s)


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def read_token_file(path: str) -> str:
    """The token in ``path``, without surrounding whitespace; an empty file is an error."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read token file {path}: {exc}") from exc
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


def load_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> SchedulerConfig:
    """Settings from the file at ``path`` (if any), then the environment, then ``overrides``.

    ``overrides`` are the flags: ``listen``, ``token_file``, ``log_level``, ``redis_url``
    and ``advertise_url``; None values are ignored.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = dict(loaded)
    token: str | None = None
    token_file = raw.pop("token_file", None)
    if token_file is not None:
        if not isinstance(token_file, str):
            raise ConfigError("token_file: expected a path")
        token = read_token_file(token_file)
    scheduling_raw = raw.pop("scheduling", None) or {}
    try:
        tls = load_tls(raw.pop("tls", None), os.environ)
    except TLSConfigError as exc:
        raise ConfigError(str(exc)) from exc
    if not isinstance(scheduling_raw, dict):
        raise ConfigError("scheduling: expected a mapping")
    if env_listen := os.environ.get(ENV_LISTEN, "").strip():
        raw["listen"] = env_listen
    if env_token := os.environ.get(ENV_TOKEN, "").strip():
        token = env_token
    if env_redis := os.environ.get(ENV_REDIS_URL, "").strip():
        raw["redis_url"] = env_redis
    if env_advertise := os.environ.get(ENV_ADVERTISE_URL, "").strip():
        raw["advertise_url"] = env_advertise
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "token_file":
            token = read_token_file(value)
        else:
            raw[key] = value
    if "token" in raw:
        raise ConfigError("unknown setting 'token': put the token in a file and set token_file")
    values = _typed_fields(SchedulerConfig, raw, skip={"scheduling", "token", "tls"})
    for key, reason in _SCHEDULING_KEYS_ELSEWHERE.items():
        if key in scheduling_raw:
            raise ConfigError(f"scheduling.{key}: {reason}")
    scheduling_values = _typed_fields(
        SchedulerSettings,
        scheduling_raw,
        skip=set(_SCHEDULING_KEYS_ELSEWHERE),
        prefix="scheduling.",
    )
    try:
        scheduling = SchedulerSettings(**scheduling_values)
    except ValueError as exc:
        raise ConfigError(f"scheduling: {exc}") from exc
    return SchedulerConfig(**values, token=token, scheduling=scheduling, tls=tls)


def _typed_fields(
    cls: type[Any], raw: Mapping[str, Any], skip: set[str], prefix: str = ""
) -> dict[str, Any]:
    """Check ``raw`` against the dataclass fields of ``cls``: names known, types right."""
    specs = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spec = specs.get(key)
        if spec is None:
            extra = [] if prefix else list(_FILE_ONLY_KEYS)
            known = ", ".join(sorted([*specs, *extra]))
            raise ConfigError(f"unknown setting {prefix + key!r}; known: {known}")
        values[key] = _typed(f"{prefix}{key}", str(spec.type), value)
    return values


def _typed(name: str, annotation: str, value: Any) -> Any:
    """YAML is typed already: accept the declared type only (an int where a float goes)."""
    if value is None and annotation.endswith("| None"):
        return None
    base = annotation.removesuffix(" | None")
    if base == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base == "str" and isinstance(value, str):
        return value
    if base == "bool" and isinstance(value, bool):
        return value
    raise ConfigError(f"{name}: expected {annotation}, got {value!r}")
