"""SchedulerConfig: YAML, environment and flags in that order; unknown keys are errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler.core import SchedulerSettings
from scheduler.service.config import SchedulerConfig, load_config
from scheduler.service.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STARLING_SCHEDULER_LISTEN", raising=False)
    monkeypatch.delenv("STARLING_TOKEN", raising=False)
    monkeypatch.delenv("STARLING_REDIS_URL", raising=False)
    monkeypatch.delenv("STARLING_SCHEDULER_ADVERTISE_URL", raising=False)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scheduler.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_work_on_one_machine() -> None:
    config = load_config(None)
    assert config == SchedulerConfig()
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8002)
    assert config.token is None
    assert config.host_ttl_s == 30.0
    assert config.core_settings.host_ttl_s == 30.0


def test_a_full_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  t0ken\n")
    path = _write(
        tmp_path,
        f"""
listen: "[::1]:9000"
host_ttl_s: 10
upkeep_interval_s: 0.5
rng_seed: 42
token_file: {token_file}
log_level: debug
scheduling:
  parents_per_decision: 6
  back_to_source_quota: 3
  back_to_source_after_retries: null
  seed_wait_s: 1
""",
    )
    config = load_config(path)
    assert (config.listen_host, config.listen_port) == ("::1", 9000)
    assert (config.host_ttl_s, config.upkeep_interval_s, config.rng_seed) == (10.0, 0.5, 42)
    assert config.token == "t0ken"
    assert config.log_level == "debug"
    assert config.scheduling == SchedulerSettings(
        parents_per_decision=6,
        back_to_source_quota=3,
        back_to_source_after_retries=None,
        seed_wait_s=1.0,
    )
    assert config.core_settings.host_ttl_s == 10.0
    assert "t0ken" not in repr(config)


def test_environment_overrides_the_file_and_flags_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_token = tmp_path / "file-token"
    file_token.write_text("from-file")
    flag_token = tmp_path / "flag-token"
    flag_token.write_text("from-flag")
    path = _write(tmp_path, f"listen: 127.0.0.1:1\ntoken_file: {file_token}\n")
    assert load_config(path).token == "from-file"
    monkeypatch.setenv("STARLING_SCHEDULER_LISTEN", "127.0.0.1:2")
    monkeypatch.setenv("STARLING_TOKEN", "from-env")
    config = load_config(path)
    assert (config.listen_port, config.token) == (2, "from-env")
    config = load_config(path, {"listen": "127.0.0.1:3", "token_file": str(flag_token)})
    assert (config.listen_port, config.token) == (3, "from-flag")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: blue\n", "unknown setting 'colour'"),
        ("token: abc\n", "token_file"),
        ("scheduling:\n  parent_count: 3\n", "unknown setting 'scheduling.parent_count'"),
        ("scheduling:\n  host_ttl_s: 3\n", "set host_ttl_s at the top level"),
        ("scheduling:\n  parents_per_decision: 0\n", "parents_per_decision must be >= 1"),
        ("scheduling: 3\n", "scheduling: expected a mapping"),
        ("host_ttl_s: '30'\n", "host_ttl_s: expected float"),
        ("host_ttl_s: 0\n", "host_ttl_s must be a positive number"),
        ("upkeep_interval_s: .nan\n", "upkeep_interval_s must be a positive number"),
        ("rng_seed: true\n", "rng_seed: expected int"),
        ("listen: localhost\n", "expected HOST:PORT"),
        ("log_level: loud\n", "log_level must be one of"),
        ("- a list\n", "expected a mapping at the top level"),
        ("key: [unclosed\n", "cannot read config"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_write(tmp_path, text))


def test_token_files_must_hold_a_usable_token(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(None, {"token_file": str(empty)})
    with pytest.raises(ConfigError, match="cannot read token file"):
        load_config(None, {"token_file": str(tmp_path / "missing")})
    spaced = tmp_path / "spaced"
    spaced.write_text("two words")
    with pytest.raises(ConfigError, match="without spaces"):
        load_config(None, {"token_file": str(spaced)})
