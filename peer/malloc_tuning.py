"""Keep freed memory in the process instead of handing it back to the kernel at once.

A peer moving pieces allocates and frees buffers of hundreds of KiB all the time: every
socket read (asyncio reads up to 256 KiB into a new bytes object), every 1 MiB batch of
a piece on its way to disk. glibc serves allocations above its mmap threshold with a
fresh ``mmap`` and gives the top of the heap back once more than its trim threshold is
free, so those buffers kept landing in pages the kernel had to fault in and zero again:
in the cluster benchmark's profile (``perf record -a``) zeroing fresh anonymous pages was
6-8% of the machine's CPU time. Buffers of up to ``MMAP_THRESHOLD_BYTES`` now come from
the heap, and up to ``TRIM_THRESHOLD_BYTES`` of free heap stay mapped for the next ones.
A peer's resident memory can stay that much above what it uses at the moment.

Only glibc has ``mallopt``; elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (see the module doc); False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not done:
        log.debug("mallopt refused the thresholds; memory is handed back as before")
    return done
