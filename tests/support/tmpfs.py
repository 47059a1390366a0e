"""A small tmpfs of a test's own: a disk that really fills up."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .requirements import require


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``mountpoint`` (created); unmount on exit.

    Needs root (``make test`` runs as root); without it the test fails, never skips.
    The unmount is lazy, so a process still holding a file cannot keep the mount alive.
    """
    require(None if os.geteuid() == 0 else "mounting a small tmpfs needs root")
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    require(f"cannot mount a tmpfs: {mounted.stderr.strip()}" if mounted.returncode else None)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
