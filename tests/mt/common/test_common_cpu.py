"""mt.common.cpu: bfloat16 only where the CPU has bfloat16 units (emulated, it is ~100x slower than float32)."""

import subprocess
import sys

from mt.common.cpu import bf16_warning, native_bf16

AVX2_EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme sse sse2 avx avx2 fma bmi2\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
COOPER = "flags\t\t: avx2 avx512f avx512_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes atomics\n"


def test_bf16_units_from_cpuinfo():
    assert not native_bf16(AVX2_EPYC) and not native_bf16(GRAVITON2) and not native_bf16("")
    assert native_bf16(SAPPHIRE) and native_bf16(COOPER) and native_bf16(GRAVITON3)
    assert not native_bf16("model name\t: bf16 avx512_bf16 in a name is no flag\n")


def test_warning_only_on_a_cpu_that_emulates(monkeypatch):
    import mt.common.cpu as cpu

    monkeypatch.setattr(cpu, "native_bf16", lambda cpuinfo=None: False)
    assert "leave --bf16 out" in bf16_warning("cpu") and bf16_warning("cuda") is None
    monkeypatch.setattr(cpu, "native_bf16", lambda cpuinfo=None: True)
    assert bf16_warning("cpu") is None


def test_the_recipes_probe_prints_the_flag_or_nothing():
    out = subprocess.run(
        [sys.executable, "-m", "mt.common.cpu", "bf16-flag"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ("--bf16" if native_bf16() else "")
