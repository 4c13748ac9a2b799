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
# Fusion: blocks up to 128 MB (every map of a 640x480 pair or of a fusion tile) are served from the
# heap and kept there when freed. Larger ones stay with mmap: kept too, they fragmented the heap and
# raised the peak of a tiled 4000x3000 pair from 1.39 to 1.47 GB (measured; 1.48 GB with glibc's defaults).
FUSION_BLOCKS = 128 << 20
# Training allocates the same shapes every step, so keeping even its largest maps (a 32-channel map
# of a 16 x 256 x 256 batch is 134 MB) cannot fragment the heap: measured 2.1x per train-base step.
TRAINING_BLOCKS = 1 << 30


def reuse_freed_memory(below: int = FUSION_BLOCKS) -> bool:
    """Make glibc keep freed blocks up to ``below`` bytes for reuse; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, below)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * below))
