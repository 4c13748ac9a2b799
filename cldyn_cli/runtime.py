"""Process settings that make CPU inference faster without changing any result.

Fusion allocates feature maps of tens of megabytes, layer after layer. glibc's malloc serves
blocks above 32 MB with a fresh ``mmap`` and returns freed memory at the top of the heap to the
system, so every such map is page-faulted and zeroed by the kernel again on every call: measured
on a 640x480 pair, that was a quarter of the fusion time (``benchmarks/profile_fuse.py``).
Keeping freed memory in the process for reuse removes it; the resident size then stays near its
peak instead of shrinking after each image.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
# Blocks up to 128 MB (every map of a 640x480 pair or of a fusion tile) are served from the heap and
# kept there when freed. Larger ones stay with mmap: kept too, they fragmented the heap and raised
# the peak of a tiled 4000x3000 pair from 1.39 to 1.47 GB (measured; 1.48 GB with glibc's defaults).
REUSE_BELOW = 128 << 20
_done = False


def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse (once per process); False where that is not glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, REUSE_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * REUSE_BELOW))
    return _done
