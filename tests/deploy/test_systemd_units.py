"""The systemd units pass ``systemd-analyze verify``, start the daemons with arguments
their command lines accept, and ship example configs the daemons load."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peer.cli import build_parser as peer_parser
from peer.config import load_config as load_peer_config
from scheduler.service.cli import build_parser as scheduler_parser
from scheduler.service.config import load_config as load_scheduler_config
from tests.support.requirements import require

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALL_BIN = "/opt/starling/bin/"
UNITS: dict[str, Callable[[], Any]] = {
    "p2p-peer.service": peer_parser,
    "p2p-scheduler.service": scheduler_parser,
}


def read_unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def verify(tmp_path: Path, names: list[str], text_of: Callable[[str], str]) -> str:
    """``systemd-analyze verify`` output (empty when clean) for the units as given."""
    require(None if shutil.which("systemd-analyze") else "systemd-analyze not installed")
    for name in names:
        (tmp_path / name).write_text(text_of(name))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else " (failed)")


def installed(name: str) -> str:
    # verify checks that ExecStart exists: point it at this checkout's console scripts,
    # which `pip install` put where it puts them in /opt/starling/bin.
    return (SYSTEMD / name).read_text().replace(INSTALL_BIN, str(Path(sys.executable).parent) + "/")


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify(tmp_path, list(UNITS), installed) == ""


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    output = verify(
        tmp_path, ["p2p-peer.service"], lambda n: installed(n).replace("Restart=", "Restrat=")
    )
    assert "Restrat" in output


@pytest.mark.parametrize("name", list(UNITS))
def test_exec_start_arguments_parse_and_its_config_loads(name: str) -> None:
    service = read_unit(name)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALL_BIN + name.removesuffix(".service")
    args = UNITS[name]().parse_args(argv[1:])
    # The token comes from the credential systemd loads from /etc/starling/token.
    assert service["LoadCredential"] == "token:/etc/starling/token"
    assert args.token_file == "${CREDENTIALS_DIRECTORY}/token"
    example = SYSTEMD / Path(args.config).name
    assert args.config == f"/etc/starling/{example.name}"
    if name == "p2p-peer.service":
        config = load_peer_config(str(example))
        # The cache lives in the unit's state directory, which systemd creates and owns.
        assert config.data_dir == "/var/lib/" + service["StateDirectory"]
        assert config.listen_host == "127.0.0.1"
    else:
        assert load_scheduler_config(str(example)).listen_port == 8002
