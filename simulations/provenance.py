"""Where a result file came from: the command, when, and which code made it."""

from __future__ import annotations

import datetime
import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

from simulations.accel import REPO_ROOT, label


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def provenance(command: str, argv: Sequence[str]) -> dict[str, Any]:
    """``command`` and ``argv`` as one shell line, the UTC time, ``git rev-parse HEAD``
    and whether tracked files differed from it (then HEAD alone does not reproduce the
    result), and whether the compiled modules ran (same results, other wall times)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": shlex.join([command, *argv]),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code_revision": _git("rev-parse", "HEAD"),
        "code_modified": bool(status) if status is not None else None,
        "modules": label(),
    }
