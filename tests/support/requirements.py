"""Test dependencies are required, never skipped: a skipped test proves nothing.

``make test`` installs every Debian package the suite drives (as root); a test that
finds one missing fails with a message saying what to install.
"""

from __future__ import annotations


class MissingTestDependency(RuntimeError):
    """Something the suite needs is not installed or not permitted here."""


def require(problem: str | None) -> None:
    """Fail when ``problem`` (an ``*_unavailable_reason()`` result) is set."""
    if problem:
        raise MissingTestDependency(
            f"{problem}. Run `make test` as root: it installs docker-registry, containerd, "
            "redis-server, skopeo and prometheus."
        )
