"""A one-line progress bar on stderr for runs that take more than a few seconds.

It reads the wall clock only to decide when to draw; nothing it does reaches the
simulation, so a run is the same with or without it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 28


class Progress:
    """Draws ``label [#####-----] done/total detail`` in place, at most a few times a second.

    Nothing is drawn for the first ``delay_s``: short runs stay quiet. Disabled, every
    call returns at once.
    """

    def __init__(
        self,
        enabled: bool,
        stream: TextIO | None = None,
        delay_s: float = 2.0,
        interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._delay_s = delay_s
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._drawn_at = -float("inf")
        self._width = 0

    @staticmethod
    def wanted(flag: bool | None, stream: TextIO | None = None) -> bool:
        """``--progress`` / ``--no-progress`` if given, else whether stderr is a terminal."""
        if flag is not None:
            return flag
        stream = stream if stream is not None else sys.stderr
        return stream.isatty()

    def update(self, label: str, done: int, total: int, detail: str = "") -> None:
        if not self.enabled:
            return
        now = self._clock()
        if now - self._started < self._delay_s or now - self._drawn_at < self._interval_s:
            return
        self._drawn_at = now
        share = done / total if total > 0 else 0.0
        filled = min(BAR_WIDTH, int(share * BAR_WIDTH))
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        line = f"{label} [{bar}] {done}/{total} {detail}  {now - self._started:.0f} s"
        pad = max(0, self._width - len(line))
        self._stream.write("\r" + line + " " * pad)
        self._stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Erase the bar, so what is printed next starts on a clean line.

        The next update starts a new run: quiet for ``delay_s`` again, time from zero.
        """
        if self.enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
        self._started = self._clock()
        self._drawn_at = -float("inf")
