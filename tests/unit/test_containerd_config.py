"""``p2pctl containerd-config``: the hosts.toml it writes, and what it refuses."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ctl.cli import main
from ctl.containerd_config import MARKER


def _read(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text())


def test_writes_one_file_per_registry_with_the_mirror_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "containerd-config",
            "--config-dir",
            str(tmp_path),
            "--dial-timeout",
            "300ms",
            "docker.io",
            "registry.local:5000",
            "ghcr.io",
            "_default",
            "--insecure-registry",
            "registry.local:5000",
        ]
    )
    assert code == 0
    mirror = {"capabilities": ["pull", "resolve"], "dial_timeout": "300ms"}
    assert _read(tmp_path / "docker.io" / "hosts.toml") == {
        "server": "https://registry-1.docker.io",
        "host": {"http://127.0.0.1:65001": mirror},
    }
    assert _read(tmp_path / "registry.local:5000" / "hosts.toml")["server"] == (
        "http://registry.local:5000"
    )
    assert _read(tmp_path / "ghcr.io" / "hosts.toml")["server"] == "https://ghcr.io"
    # _default: no server, so containerd falls back to whichever registry an image names.
    assert _read(tmp_path / "_default" / "hosts.toml") == {
        "host": {"http://127.0.0.1:65001": mirror}
    }
    out = capsys.readouterr().out
    assert out.count("wrote ") == 4 and "config_path" in out


def test_defaults_to_every_registry(tmp_path: Path) -> None:
    assert main(["containerd-config", "--config-dir", str(tmp_path)]) == 0
    assert [p.parent.name for p in tmp_path.glob("*/hosts.toml")] == ["_default"]


def test_rewrites_its_own_files_but_not_someone_elses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["containerd-config", "--config-dir", str(tmp_path), "docker.io", "quay.io"]
    assert main(args) == 0
    assert main([*args, "--mirror", "http://127.0.0.1:7000"]) == 0
    assert "127.0.0.1:7000" in (tmp_path / "docker.io" / "hosts.toml").read_text()

    by_hand = tmp_path / "quay.io" / "hosts.toml"
    by_hand.write_text('server = "https://quay.io"\n')
    capsys.readouterr()
    assert main(args) == 1
    assert "not written by p2pctl" in capsys.readouterr().err
    # Nothing was written: docker.io still has the mirror of the previous run.
    assert "127.0.0.1:7000" in (tmp_path / "docker.io" / "hosts.toml").read_text()
    assert by_hand.read_text() == 'server = "https://quay.io"\n'
    assert main([*args, "--force"]) == 0
    assert by_hand.read_text().startswith(MARKER)


@pytest.mark.parametrize(
    "bad",
    [
        ["../etc"],
        ["docker.io/library"],
        ["docker.io", "--mirror", "127.0.0.1:65001"],
        ["docker.io", "--mirror", "http://127.0.0.1:65001/v2"],
        ["docker.io", "--dial-timeout", "200"],
        ["docker.io", "--insecure-registry", "quay.io"],
    ],
)
def test_refuses_bad_arguments(
    tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["containerd-config", "--config-dir", str(tmp_path), *bad]) == 1
    assert capsys.readouterr().err.startswith("p2pctl containerd-config: ")
    assert not list(tmp_path.iterdir())
