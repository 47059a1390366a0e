"""A child process with its output in a log file, for fixtures that run real binaries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Time a process gets to exit after SIGTERM before it is killed outright.
TERMINATE_GRACE_S = 5.0


class ProcessFailed(RuntimeError):
    """A fixture process exited early or did not become ready; the message has its log."""


def log_tail(path: str | os.PathLike[str], max_lines: int = 40) -> str:
    """Return the last lines of a log file for error messages ('' if unreadable)."""
    try:
        with open(path, errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return ""
    return "".join(lines[-max_lines:])


class LoggedProcess:
    """Run ``argv`` with stdout and stderr appended to ``log_path``.

    The process gets its own session so that stopping it never signals the test runner,
    and so that a stuck child can be killed by its own pid alone.
    """

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        name: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self.name = name
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe_failure(self, what: str) -> str:
        """An error message naming the command, its exit status and the log's tail."""
        status = self.popen.poll()
        state = "still running" if status is None else f"exited with status {status}"
        return (
            f"{self.name}: {what} ({state})\n"
            f"command: {' '.join(self.argv)}\n"
            f"log {self.log_path}, last lines:\n{log_tail(self.log_path)}"
        )

    def check_alive(self) -> None:
        """Raise ProcessFailed with the log tail if the process has already exited."""
        if not self.alive():
            raise ProcessFailed(self.describe_failure("exited before it was ready"))

    def stop(self, grace_s: float = TERMINATE_GRACE_S) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Safe to call twice."""
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=grace_s)
