"""Whether this CPU computes in bfloat16 natively, so the recipes pass ``--bf16`` only where it pays.

Why: on a CPU with AVX512-BF16 or AMX (x86) or the BF16 extension (ARM), bfloat16 matrix products run
several times faster than float32 (about 4x on the 2-core machine the demo was sized on). Without them,
oneDNN emulates bfloat16 and the same products run about 100x slower than float32 (measured on an AVX2-only
AMD EPYC: 0.1 vs 11 GFLOP/s for a 256x512x2048 product, 1 thread): ``make demo`` with ``--bf16`` would not
finish in hours. ``python -m mt.common.cpu bf16-flag`` prints ``--bf16`` or nothing, for shell recipes.
"""

from __future__ import annotations

import sys
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo "flags"
ARM_BF16 = "bf16"  # aarch64 /proc/cpuinfo "Features"


def native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bfloat16 matrix units; False when it has none or cannot be told (float32 is the
    safe side: at worst a few times slower, never a hundred)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        words = set(value.split())
        if key.strip() == "flags" and words & set(BF16_FLAGS):
            return True
        if key.strip() == "Features" and ARM_BF16 in words:
            return True
    return False


def bf16_warning(device: str) -> str | None:
    """The line a command prints when ``--bf16`` is asked for on a CPU that would emulate it."""
    if device != "cpu" or native_bf16():
        return None
    return (
        "--bf16 on a CPU without bfloat16 units (no AVX512-BF16 / AMX): the products are emulated, far slower "
        "than float32 here; leave --bf16 out"
    )


if __name__ == "__main__":  # python -m mt.common.cpu bf16-flag
    if sys.argv[1:] != ["bf16-flag"]:
        sys.exit("usage: python -m mt.common.cpu bf16-flag   (prints --bf16 when the CPU has bfloat16 units)")
    print("--bf16" if native_bf16() else "")
