"""Keep freed memory in the process for the next tensor of the same size (glibc malloc; stdlib only).

Why: glibc hands out blocks above its mmap threshold (128 KiB at start, raised as such blocks are freed,
at most 32 MiB) as fresh mappings that go back to the kernel when freed, and it returns the top of the heap
once more than the trim threshold lies free there. Either way the next tensor of that size faults its
memory back in, one 4 KiB page at a time, and on the project's VM a page fault costs ~10 us. Decoding
allocates and frees the same large tensors every batch and step (the encoder's activations, the
decoder's key/value caches while they grow): transformer_base, beam 4, 200 sentences at 1 thread took
750k minor faults and 7.8 s of system time in 44 s (``bench/generate.py``).

``keep_freed_memory`` sets the two thresholds (``mallopt``): blocks up to 32 MiB (glibc's maximum) come
from the heap, and the heap is not trimmed, so freed blocks are reused without faults. That is what
PyTorch's CPU performance guide gets from preloading jemalloc or tcmalloc, without ``LD_PRELOAD``.
The price: memory freed after a peak stays with the process (it is reused, not returned) until it exits.

The console scripts call it when ``mt`` is imported (``mt/__init__.py``), unless the user chose:
glibc's own ``MALLOC_*`` variables or ``GLIBC_TUNABLES`` with malloc settings, or a preloaded allocator.
Other C libraries (macOS, musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: "never trim" in practice

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def user_chose_allocator(environ: dict[str, str] | None = None) -> str | None:
    """What the user set for malloc (a variable or a preloaded allocator), or None."""
    env = os.environ if environ is None else environ
    for name in _USER_SETTINGS:
        if name in env:
            return name
    if "malloc." in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    if "malloc" in env.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc, mimalloc
        return "LD_PRELOAD"
    return None


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a GNU C library, or no confstr
        return False


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module doc); True if set."""
    if user_chose_allocator(environ) or not _glibc():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
