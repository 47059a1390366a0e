"""With ``peer.malloc_tuning`` a freed buffer stays mapped for the next one (glibc only)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# A fresh interpreter, so the thresholds start at glibc's defaults: it frees a 2 MiB
# buffer and says how much its resident memory dropped.
_PROBE = """
import json, sys
from pathlib import Path

def rss_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

if sys.argv[1] == "tuned":
    from peer.malloc_tuning import keep_freed_memory
    assert keep_freed_memory()
buffer = bytearray(2 * 1024 * 1024)
buffer[::4096] = b"x" * len(buffer[::4096])  # every page touched
before = rss_kib()
del buffer
print(json.dumps({"dropped_kib": before - rss_kib()}))
"""


def _dropped_kib(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(json.loads(out.stdout)["dropped_kib"])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's, /proc Linux's",
)
def test_a_freed_buffer_stays_mapped_once_tuned() -> None:
    # glibc's defaults hand a 2 MiB buffer back at once; tuned, it stays for reuse.
    assert _dropped_kib("default") >= 1536
    assert _dropped_kib("tuned") < 512
