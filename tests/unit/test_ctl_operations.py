"""Pure parts of p2pctl's cluster commands and the peer admin API's client check."""

from __future__ import annotations

import pytest

from ctl.api import CtlError
from ctl.preheat import piece_server_url
from ctl.registry import ImageReference, parse_reference
from ctl.status import format_bytes, plural, table
from peer.admin import is_loopback

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", ImageReference("docker.io", "library/nginx", "latest")),
        ("nginx:1.27", ImageReference("docker.io", "library/nginx", "1.27")),
        ("bitnami/redis:7", ImageReference("docker.io", "bitnami/redis", "7")),
        ("ghcr.io/org/app:v1", ImageReference("ghcr.io", "org/app", "v1")),
        ("registry.local:5000/app", ImageReference("registry.local:5000", "app", "latest")),
        ("localhost/team/app:dev", ImageReference("localhost", "team/app", "dev")),
        (f"quay.io/org/app@{DIGEST}", ImageReference("quay.io", "org/app", DIGEST)),
        (f"127.0.0.1:5000/a/b:c@{DIGEST}", ImageReference("127.0.0.1:5000", "a/b", DIGEST)),
    ],
)
def test_references_follow_dockers_rules(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text", ["", "UPPER/app", "app:", "app:bad tag", "app@sha256:short", "a//b", "app@md5:00"]
)
def test_bad_references_are_refused_by_name(text: str) -> None:
    with pytest.raises(CtlError, match="image reference|digest"):
        parse_reference(text)


def test_reference_prints_back() -> None:
    assert str(parse_reference("nginx")) == "docker.io/library/nginx:latest"
    assert str(parse_reference(f"ghcr.io/a@{DIGEST}")) == f"ghcr.io/a@{DIGEST}"


def test_piece_server_urls_bracket_ipv6() -> None:
    assert piece_server_url("10.0.0.7", 65002) == "http://10.0.0.7:65002"
    assert piece_server_url("fd00::7", 65002) == "http://[fd00::7]:65002"


def test_formatting() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1536, 50 * 2**20, 3 * 2**40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "50 MiB",
        "3.0 TiB",
    ]
    assert plural(1, "peer") == "1 peer" and plural(2, "peer") == "2 peers"
    assert table(["A", "BB"], [["xyz", "1"]]) == ["A    BB", "xyz  1"]


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.1.2.3", False),
        ("fd00::1", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_only_loopback_clients_count_as_local(remote: str | None, loopback: bool) -> None:
    assert is_loopback(remote) is loopback
