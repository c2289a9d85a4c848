"""Freed memory kept for reuse (glibc mallopt) in the console scripts, and the user's allocator choice wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mt.common.memory import keep_freed_memory, user_chose_allocator

REPO = Path(__file__).resolve().parents[3]

# what decoding does: batches of large tensors whose sizes change from batch to batch (rows, lengths),
# allocated, used and freed together; 16 rounds of 6 tensors of 4-28 MiB
PATTERN = """
import resource, sys
sys.argv[0] = {argv0!r}
import mt  # the console scripts' setup happens here
import torch
faults = []
sizes = [4, 24, 6, 20, 5, 28, 8, 16]
for rnd in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ts = [torch.empty(sizes[rnd % 8] << 18).fill_(1.0) for _ in range(6)]
    del ts
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[8:]))
"""


def _faults(argv0: str, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run(
        [sys.executable, "-c", PATTERN.format(argv0=argv0)], capture_output=True, text=True, cwd=REPO, env=environ
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"), reason="glibc only")
def test_console_scripts_reuse_freed_tensors_without_page_faults():
    pages = 6 * sum([4, 24, 6, 20, 5, 28, 8, 16]) * 256  # what rounds 9-16 touch: 170,496 pages
    assert _faults("mt-generate") < pages // 100  # freed blocks come back without faulting
    # the control: with glibc's defaults the second pass over the sizes still faults (19k-29k pages
    # measured); a user's own MALLOC_* setting is left alone in a console script (here: trim at 128 KiB,
    # every round faults everything)
    assert _faults("python") > pages // 20
    assert _faults("mt-generate", MALLOC_TRIM_THRESHOLD_="131072") > pages // 2


@pytest.mark.parametrize(
    "env, chosen",
    [
        ({}, None),
        ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_MMAP_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES"),
        ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}, None),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "LD_PRELOAD"),
        ({"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}, "LD_PRELOAD"),
    ],
)
def test_the_users_allocator_choice_wins(env, chosen):
    assert user_chose_allocator(env) == chosen
    if chosen:
        assert keep_freed_memory(env) is False
