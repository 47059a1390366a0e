"""Settings for scheduler replicas: the peer's scheduler URLs, the scheduler's Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.config import ConfigError as PeerConfigError
from peer.config import load_config as load_peer_config
from peer.scheduler_client import scheduler_urls
from scheduler.service.config import SchedulerConfig
from scheduler.service.config import load_config as load_scheduler_config
from scheduler.service.errors import ConfigError

A, B = "http://10.0.0.5:8002", "http://10.0.0.6:8002"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "STARLING_SCHEDULER",
        "STARLING_REDIS_URL",
        "STARLING_SCHEDULER_ADVERTISE_URL",
        "STARLING_SCHEDULER_LISTEN",
        "STARLING_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


def test_a_peer_takes_several_scheduler_urls(tmp_path: Path) -> None:
    config = load_peer_config(None, {"scheduler": f"{A}/, {B}"})
    assert scheduler_urls(config.scheduler or "") == [A, B]
    path = tmp_path / "peer.yaml"
    path.write_text(f"scheduler: [{A}, {B}]\n")
    assert scheduler_urls(load_peer_config(str(path)).scheduler or "") == [A, B]


def test_the_environment_names_the_peer_s_schedulers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARLING_SCHEDULER", f"{A},{B}")
    assert scheduler_urls(load_peer_config(None).scheduler or "") == [A, B]


@pytest.mark.parametrize("value", [",", "sched:8002", f"{A},ftp://x"])
def test_a_peer_refuses_what_is_not_a_scheduler_url(value: str) -> None:
    with pytest.raises(PeerConfigError, match="scheduler"):
        load_peer_config(None, {"scheduler": value})


def test_without_redis_a_scheduler_stands_alone() -> None:
    config = load_scheduler_config(None)
    assert config.redis_url is None and config.advertise_url is None


def test_redis_from_the_file_the_environment_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(
        "redis_url: redis://file:6379/0\n"
        "advertise_url: http://10.0.0.5:8002\n"
        "replica_heartbeat_s: 2\n"
        "replica_ttl_s: 6\n"
        "redis_key_prefix: 'cluster-a:'\n"
    )
    config = load_scheduler_config(str(path))
    assert config.redis_url == "redis://file:6379/0"
    assert config.advertise_url == A
    assert (config.replica_heartbeat_s, config.replica_ttl_s) == (2.0, 6.0)
    assert config.redis_key_prefix == "cluster-a:"
    monkeypatch.setenv("STARLING_REDIS_URL", "redis://:s3cret@env:6379/1")
    monkeypatch.setenv("STARLING_SCHEDULER_ADVERTISE_URL", B)
    config = load_scheduler_config(str(path))
    assert (config.redis_url, config.advertise_url) == ("redis://:s3cret@env:6379/1", B)
    assert "s3cret" not in repr(config)  # the URL may carry Redis's password
    config = load_scheduler_config(str(path), {"redis_url": "redis://flag:6379/2"})
    assert config.redis_url == "redis://flag:6379/2"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"redis_url": "http://redis:6379"}, "redis_url"),
        ({"advertise_url": "10.0.0.5:8002"}, "advertise_url"),
        ({"replica_heartbeat_s": 3.0, "replica_ttl_s": 5.0}, "replica_ttl_s"),
        ({"replica_heartbeat_s": 0.0}, "replica_heartbeat_s"),
    ],
)
def test_bad_replica_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SchedulerConfig(**settings)  # type: ignore[arg-type]
