"""The systemd units' TLS lines: the same in both units, and valid once uncommented.

The lines ship commented out (TLS is optional). Uncommented, the units must still pass
``systemd-analyze verify``, and the variables they set must be the ones the daemons'
config loaders read, naming the credentials the units load.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from cluster_tls import ENV_CA_FILE, ENV_CERT_FILE, ENV_KEY_FILE
from tests.deploy.test_systemd_units import SYSTEMD, UNITS, installed, verify

TLS_LINE = re.compile(
    r"^#((?:LoadCredential=(?:tls\.crt|tls\.key|ca\.crt):|Environment=STARLING_TLS_).*)$"
)


def tls_lines(name: str) -> list[str]:
    lines = (SYSTEMD / name).read_text().splitlines()
    return [m.group(1) for line in lines if (m := TLS_LINE.match(line))]


def with_tls(name: str) -> str:
    return "\n".join(TLS_LINE.sub(r"\1", line) for line in installed(name).splitlines()) + "\n"


def test_both_units_carry_the_same_tls_lines() -> None:
    peer, scheduler = (tls_lines(name) for name in UNITS)
    assert len(peer) == 4
    assert peer == scheduler


def test_the_tls_lines_verify_and_name_the_loaded_credentials(tmp_path: Path) -> None:
    assert verify(tmp_path, list(UNITS), with_tls) == ""
    lines = tls_lines("p2p-peer.service")
    credentials = {
        line.removeprefix("LoadCredential=").split(":")[0]: line.split(":", 1)[1]
        for line in lines
        if line.startswith("LoadCredential=")
    }
    assert set(credentials.values()) == {
        "/etc/starling/tls/tls.crt",
        "/etc/starling/tls/tls.key",
        "/etc/starling/tls/ca.crt",
    }
    (environment,) = [
        line.removeprefix("Environment=") for line in lines if line.startswith("Environment=")
    ]
    variables = dict(item.split("=", 1) for item in shlex.split(environment))
    assert set(variables) == {ENV_CERT_FILE, ENV_KEY_FILE, ENV_CA_FILE}
    # %d is the unit's credentials directory: each variable names a loaded credential.
    assert {v.removeprefix("%d/") for v in variables.values()} == set(credentials)
