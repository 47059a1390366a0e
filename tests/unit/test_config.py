from pathlib import Path

import pytest

from peer.config import ConfigError, load_config
from peer.sizes import parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("4MiB", 4 * 1024**2),
        ("20GiB", 20 * 1024**3),
        ("1.5G", 1_500_000_000),
        (7, 7),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "-1", "12 parsecs", "1e9"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_defaults_work_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STARLING_LISTEN", raising=False)
    config = load_config(None)
    assert config.listen == "127.0.0.1:65001"
    assert config.upstream.default_registry == "docker.io"


def test_file_env_and_flags_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "peer.yaml"
    path.write_text(
        "listen: 0.0.0.0:7000\ncache_quota: 1GiB\n"
        "upstream:\n  insecure_registries: [reg.local:5000]\n  endpoints: {docker.io: http://m:1}\n"
    )
    monkeypatch.setenv("STARLING_LISTEN", "127.0.0.1:7001")
    config = load_config(str(path), {"insecure_registries": ["other:1"], "data_dir": str(tmp_path)})
    assert config.listen == "127.0.0.1:7001"
    assert config.cache_quota_bytes == 1024**3
    assert config.data_dir == str(tmp_path)
    assert config.upstream.insecure_registries == ("reg.local:5000", "other:1")
    assert config.upstream.endpoints["docker.io"] == "http://m:1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cache_qouta: 1GiB\n", "unknown setting 'cache_qouta'"),
        ("listen: nowhere\n", "expected HOST:PORT"),
        ("cache_quota: lots\n", "invalid size"),
        ("upstream:\n  colour: blue\n", "unknown setting 'colour'"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "peer.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))
