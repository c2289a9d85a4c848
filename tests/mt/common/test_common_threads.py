"""The thread count picked for a shared machine, cgroup quotas, and passive OpenMP waiting for the console scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mt.common import threads
from mt.common.threads import (
    cgroup_quota,
    configure_threads,
    is_cli,
    passive_wait_early,
    passive_waiting,
    pick_threads,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "cpus, quota, load, host, want",
    [
        (2, None, 0.0, None, 2),  # quiet: every CPU
        (2, None, 0.4, None, 2),  # a little noise: still both
        (2, None, 1.0, None, 1),  # one core taken
        (2, None, 2.0, None, 1),  # issue 21's benchmark: 2 busy processes
        (2, None, 6.0, None, 1),  # ... and 6: never below 1
        (2, None, 8.0, None, 1),  # make demo beside other jobs (load ~8)
        (16, None, 4.0, None, 12),
        (16, None, 0.0, None, 16),
        (16, 4.0, 0.0, None, 4),  # a cgroup quota of 4 CPUs caps it
        (16, 2.5, 0.0, None, 2),  # fractional quota: whole CPUs only
        (16, 0.5, 0.0, None, 1),
        (4, None, 8.0, 64, 4),  # 4 CPUs of a 64-CPU host: 8 runnable spread over 64 leave ours free
        (4, None, 32.0, 64, 2),
    ],
)
def test_pick_threads(cpus, quota, load, host, want):
    assert pick_threads(cpus, quota, load, host_cpus=host) == want


@pytest.mark.parametrize(
    "cpus, quota, load, want",
    [
        (2, None, 0.0, 2),
        (2, None, 2.0, 2),  # beside 2 busy processes: both threads (579 vs 490 tok/s for 1, bench/oversubscription)
        (2, None, 8.0, 2),
        (16, None, 4.0, 16),
        (16, 2.5, 6.0, 2),  # the cgroup quota still caps it
        (16, 0.5, 0.0, 1),
    ],
)
def test_pick_threads_with_passive_waiting_keeps_every_usable_cpu(cpus, quota, load, want):
    assert pick_threads(cpus, quota, load, passive=True) == want


def test_passive_waiting_read_from_the_environment():
    assert passive_waiting({"OMP_WAIT_POLICY": "passive"}) and passive_waiting({"GOMP_SPINCOUNT": "0"})
    assert not passive_waiting({}) and not passive_waiting({"OMP_WAIT_POLICY": "ACTIVE"})
    assert not passive_waiting({"GOMP_SPINCOUNT": "10000"})


def test_cgroup_quota_v2_v1_and_none(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_quota(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1) == 1.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v1) is None
    assert cgroup_quota(tmp_path / "missing") is None


def test_configure_threads_explicit_wins_and_says_the_choice(monkeypatch):
    old = torch.get_num_threads()
    said = []
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # spinning: the load lowers the count
        monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
        assert configure_threads(1, "mt-x", said.append) == 1 and torch.get_num_threads() == 1 and not said
        monkeypatch.setattr(threads, "cpu_count", lambda: 2)
        monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
        monkeypatch.setattr(threads, "other_load", lambda: 6.0)
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
        assert configure_threads(0, "mt-x", said.append) == 1 and torch.get_num_threads() == 1
        assert said == ["mt-x: 1 torch thread of 2 CPUs (other processes keep 6.0 busy); --threads N to choose"]
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # sleeping waits: every CPU, nothing said
        assert configure_threads(0, "mt-x", said.append) == 2 and torch.get_num_threads() == 2 and len(said) == 1
        monkeypatch.delenv("OMP_WAIT_POLICY")
        monkeypatch.setattr(threads, "other_load", lambda: 0.0)
        assert configure_threads(0, "mt-x", said.append) == 2 and len(said) == 1  # all CPUs: nothing said
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice, as --threads
        torch.set_num_threads(1)
        assert configure_threads(0, "mt-x", said.append) == 1 and len(said) == 1
    finally:
        torch.set_num_threads(old)


def test_other_load_is_at_most_the_load_average():
    assert 0.0 <= threads.other_load(samples=2, interval=0.0) <= os.getloadavg()[0] + 1e-9


def test_passive_waiting_only_for_console_scripts_and_only_when_unset(monkeypatch):
    assert is_cli("/venv/bin/mt-train") and is_cli("/usr/bin/mine-embed") and is_cli("/x/mt/train/__main__.py")
    assert not is_cli("/usr/bin/python") and not is_cli("-c") and not is_cli("")
    env: dict[str, str] = {}
    assert not passive_wait_early(env)  # torch is already imported here: too late to matter, so left alone
    monkeypatch.setattr(threads.sys, "modules", {k: v for k, v in sys.modules.items() if k != "torch"})
    monkeypatch.setattr(threads.sys, "argv", ["/venv/bin/mt-generate"])
    assert passive_wait_early(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not passive_wait_early(env) and env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_console_script_starts_torch_with_passive_waiting(tmp_path):
    """A script named like the console scripts gets OMP_WAIT_POLICY=PASSIVE before torch loads libgomp
    (importing ``mt`` first, as every console script does); ``python -c`` (a library user) does not."""
    probe = "import os, mt, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    script = tmp_path / "mt-probe"
    script.write_text(probe + "\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(REPO)
    run = [sys.executable]
    assert subprocess.run([*run, str(script)], env=env, capture_output=True, text=True).stdout.strip() == "PASSIVE"
    assert subprocess.run([*run, "-c", probe], env=env, capture_output=True, text=True).stdout.strip() == "None"
