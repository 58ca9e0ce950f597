"""Host allocator settings for training processes.

XLA's CPU runtime takes each step's temporaries as one large malloc (158 MB for configs/full.py at MMAct sizes,
batch 128) and frees it after the step. glibc serves blocks that large with a fresh mmap and gives them back
with munmap, so every step page-faults the whole block in again: profiled at about 40,000 page faults and 15-20%
of the step on a 2-core CPU. Keeping freed memory in the process (one arena, no mmap for large blocks, trimming
only above 2 GB) removes those faults. Tools that recommend tcmalloc or jemalloc for JAX and TensorFlow on CPU do
the same thing with a preloaded allocator; this needs nothing installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_TRIM_ABOVE_BYTES = 2**31 - 1


def retain_freed_memory() -> bool:
    """Makes glibc reuse freed host memory instead of returning it to the OS; True if applied.

    Call before JAX starts its threads (harjax.main does, first thing). A no-op, logged, where the C library is
    not glibc (macOS, musl).
    """
    library = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(library).mallopt
    except (OSError, AttributeError, TypeError):
        logging.info("host allocator left as it is: no glibc mallopt in %s", library)
        return False
    return all(mallopt(option, value) == 1 for option, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_ABOVE_BYTES)))
