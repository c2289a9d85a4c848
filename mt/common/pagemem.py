"""What of a memory-mapped checkpoint is really in this process's memory, and how to give pages back.

Why not ``mincore``: it reports whether a file page is in the *page cache*, which is shared, survives the
process and is full right after the checkpoint was written; it says nothing about this process. Here a
mapped page counts when it is present in this process's page tables: bit 63 of its entry in
``/proc/self/pagemap`` (readable for one's own pages without privileges; the physical frame numbers,
which need privileges, are not used). That is exactly what the mapping's ``Rss`` in ``/proc/self/smaps``
sums, per byte range instead of per mapping. Cross-check: ``smaps_rss(path)``.

Kernel behaviour worth knowing (measured on Linux 6.18, ext4): a fault maps the faulting page plus
neighbours already in the page cache (fault-around, 64 KiB; a whole large folio, up to 2 MiB, when the
file was just written), so "slicing expert e touches only its pages" holds up to that window. Cold expert
ranges therefore get ``MADV_RANDOM`` (no speculative read-around), each load asks for exactly its bytes
(``MADV_WILLNEED``), and after loading the ranges are dropped again (``MADV_DONTNEED``: for a read-only
file mapping the pages leave this process; the page cache, shared and reclaimable, may keep them).

Linux only; elsewhere ``present_bytes`` returns None and the advice calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import sys
from typing import Iterable, Sequence

import numpy as np
import torch

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MADV_RANDOM, MADV_WILLNEED, MADV_DONTNEED = 1, 3, 4

Range = tuple[int, int]  # (address, bytes)


def tensor_range(t: torch.Tensor) -> Range:
    """(address, bytes) of a contiguous tensor's data."""
    return t.data_ptr(), t.numel() * t.element_size()


def _pages(ranges: Iterable[Range]) -> list[tuple[int, int]]:
    """Merged page intervals [first, last] covering ``ranges`` (a page shared by two ranges counts once)."""
    spans = sorted((a // PAGE, (a + n - 1) // PAGE) for a, n in ranges if n > 0)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def present_bytes(ranges: Iterable[Range]) -> int | None:
    """Bytes of the pages covering ``ranges`` that are mapped into this process (None: no pagemap)."""
    spans = _pages(ranges)
    try:
        with open("/proc/self/pagemap", "rb") as fh:
            total = 0
            for lo, hi in spans:
                fh.seek(lo * 8)
                entries = np.frombuffer(fh.read((hi - lo + 1) * 8), dtype=np.uint64)
                total += int((entries >> np.uint64(63)).sum())
            return total * PAGE
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.madvise.restype = ctypes.c_int
    return lib


def _file_mappings() -> list[tuple[int, int, str]]:
    """(start, end, path) of this process's file-backed mappings."""
    out = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    out.append((lo, hi, parts[5].rstrip("\n")))
    except OSError:
        pass
    return out


def joined_file_mappings() -> list[list]:
    """[start, end, path] of the file mappings, adjacent pieces of one file joined (madvise splits them)."""
    maps: list[list] = []
    for lo, hi, path in sorted(_file_mappings()):
        if maps and maps[-1][1] == lo and maps[-1][2] == path:
            maps[-1][1] = hi
        else:
            maps.append([lo, hi, path])
    return maps


def file_backed(ranges: Sequence[Range], maps: list[list] | None = None) -> bool:
    """True when every range lies in a file mapping (so ``MADV_DONTNEED`` cannot lose data). ``maps``: a
    ``joined_file_mappings()`` the caller keeps (reading /proc/self/maps per call is slow)."""
    maps = joined_file_mappings() if maps is None else maps
    for a, n in ranges:
        if n and not any(lo <= a and a + n <= hi for lo, hi, _ in maps):
            return False
    return True


def advise(ranges: Iterable[Range], advice: int) -> None:
    """``madvise`` on the pages covering ``ranges``. Only call DONTNEED on file mappings (see ``file_backed``):
    on anonymous memory it would zero the data."""
    lib = _libc()
    if lib is None:
        return
    for lo, hi in _pages(ranges):
        lib.madvise(lo * PAGE, (hi - lo + 1) * PAGE, advice)


def drop_file_pages(paths: Iterable[str | os.PathLike]) -> None:
    """``MADV_DONTNEED`` on every mapping of these files in this process: read-only file pages leave it (the
    page cache keeps them). Wider than ``advise`` on a tensor's range: fault-around maps neighbours too,
    and copying tensor by tensor would otherwise leave those behind, a few pages per tensor."""
    names = {os.path.realpath(p) for p in paths}
    ranges = [(lo, hi - lo) for lo, hi, path in _file_mappings() if path in names]
    if ranges:
        advise(ranges, MADV_DONTNEED)


def smaps_rss(path: str | os.PathLike) -> int | None:
    """Resident bytes of this process's mappings of the file ``path`` (``Rss`` in /proc/self/smaps)."""
    target = os.path.realpath(path)
    total, current = 0, False
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                head = line.split(maxsplit=1)[0]
                if not head.endswith(":"):  # a mapping's header line: "start-end perms offset dev inode [path]"
                    parts = line.split(maxsplit=5)
                    current = len(parts) == 6 and parts[5].rstrip("\n") == target
                elif current and head == "Rss:":
                    total += int(line.split()[1]) * 1024
        return total
    except OSError:
        return None


def peak_rss() -> int:
    """Peak resident set size of this process, bytes: ``VmHWM`` of /proc/self/status (that of this program;
    ``getrusage``'s ru_maxrss also keeps the peak of the process before ``exec``, e.g. of a parent that
    forked it), else ``getrusage``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return None
