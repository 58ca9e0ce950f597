"""Host allocator settings for CPU training processes.

XLA's CPU runtime takes each step's temporaries as one large malloc (158 MB for configs/full.py at MMAct sizes,
batch 128) and frees it after the step. glibc serves blocks that large with a fresh mmap and gives them back
with munmap, so every step page-faults the whole block in again: profiled at about 40,000 page faults and 15-20%
of the step on a 2-core CPU. Keeping freed memory in the process (one arena, no mmap for large blocks, trimming
only above 2 GB) removes those faults.

Only for a process that trains on one CPU device: with several (fake) CPU devices their executions allocate
concurrently and one arena serialises them (measured 2x slower at 8 devices), and on GPUs and TPUs the step's
temporaries live in device memory. Tools that recommend tcmalloc or jemalloc for JAX on CPU address the same cost
with a preloaded allocator; this needs nothing installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import re

import jax

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_TRIM_ABOVE_BYTES = 2**31 - 1
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def single_cpu_device_expected() -> bool:
    """Whether JAX, once started, will train on exactly one CPU device (decided without starting it)."""
    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        if platforms.split(",")[0].strip() != "cpu":
            return False
    elif any(importlib.util.find_spec(plugin) for plugin in _ACCELERATOR_PLUGINS):
        return False
    forced = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return jax.config.jax_num_cpu_devices <= 1 and (forced is None or int(forced.group(1)) <= 1)


def retain_freed_memory() -> bool:
    """Makes glibc reuse freed host memory instead of returning it to the OS; True if applied.

    Call before JAX starts its threads (harjax.main does, first thing; threads keep the arena they started
    with). Applied only where `single_cpu_device_expected()` and the C library is glibc; otherwise a no-op.
    """
    if not single_cpu_device_expected():
        return False
    library = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(library).mallopt
    except (OSError, AttributeError, TypeError):
        logging.info("host allocator left as it is: no glibc mallopt in %s", library)
        return False
    return all(
        mallopt(option, value) == 1
        for option, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_ABOVE_BYTES))
    )
