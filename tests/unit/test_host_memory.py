"""harjax.main keeps freed host memory in the process (harjax/training/host_memory.py).

So a step's large temporary block is not page-faulted in again every step.
"""

import os
import subprocess
import sys

import pytest

_BLOCK_BYTES = 320 * 2**20  # far above glibc's largest mmap threshold (32 MB)
# Plain malloc, as XLA's CPU runtime allocates (numpy would ask the kernel for huge pages instead).
_REALLOCATE = f"""
import ctypes, resource, sys
if sys.argv[1] == "retain":
    from harjax.training import host_memory
    assert host_memory.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
block = libc.malloc({_BLOCK_BYTES})
ctypes.memset(block, 1, {_BLOCK_BYTES})
libc.free(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc({_BLOCK_BYTES}), 1, {_BLOCK_BYTES})
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(code: str, *args: str, **env: str) -> str:
    environment = {name: value for name, value in os.environ.items() if name not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=environment | env
    ).stdout.strip()


def _faults_on_reallocation(mode: str) -> int:
    return int(_run(_REALLOCATE, mode, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"JAX_PLATFORMS": "cpu"}, True),
        ({"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, False),
        ({"JAX_PLATFORMS": "cuda"}, False),
    ],
)
def test_applies_only_to_a_single_cpu_device(env, expected):
    """Several CPU devices would contend for the one arena; accelerators keep temporaries on the device."""
    code = "from harjax.training import host_memory; print(host_memory.single_cpu_device_expected())"
    assert _run(code, **env) == str(expected)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's (a no-op elsewhere)")
def test_reallocating_a_freed_block_does_not_fault_its_pages_in_again():
    retained = _faults_on_reallocation("retain")
    assert retained < _BLOCK_BYTES // 4096 // 100
    # Control: glibc's default unmaps the block, so every page (or huge page) faults in again.
    assert _faults_on_reallocation("default") > 10 * max(retained, 1)
