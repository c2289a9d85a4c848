"""Torch's thread count on a shared machine, and passive OpenMP waiting (stdlib only: used before torch loads).

Why: OpenMP threads that do not find a free core wait for each other at every parallel region, and by
default (libgomp, torch's OpenMP) they wait spinning, burning the time slices the busy threads need. On
the 2-core box with ~5 other runnable processes, a loop of small (64 x 256 x 256) matmuls ran at 0.4
iterations/s with 2 threads, 12.7 with 2 threads and ``OMP_WAIT_POLICY=PASSIVE``, 20 with 1 thread: the
20x training slowdown of issue 21 where a fair share is ~4x.

So ``passive_wait_early`` (called from ``mt/__init__.py``, before anything imports torch, since libgomp
reads ``OMP_WAIT_POLICY`` once when it loads) makes OpenMP threads sleep instead of spinning while they
wait, for the console scripts only, unless the user set the variable. And the commands (mt-train,
mt-generate, mt-interactive, mt-translate, mine-embed, mt-eval translate-test) start with
``configure_threads``: an explicit ``--threads N`` or ``OMP_NUM_THREADS`` wins; otherwise ``pick_threads``
takes the CPUs this process may use (``os.sched_getaffinity``, capped by a cgroup CPU quota), and, only
where OpenMP waits spinning, drops the ones other processes keep busy.

Why all CPUs when waiting is passive: a waiting thread then sleeps and gives its core away, and Linux
shares CPU time per thread, so dropping to one thread halves the job's share rather than avoiding
contention. ``bench/oversubscription.py`` (2 CPUs, training, 15 s each, one run): beside 2 busy processes
2 passive threads ran 579 target tokens/s against 490 for 1; beside 6, 225 against 207 (spinning 2
threads: 404 and 80).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

CLI_PREFIXES = ("mt-", "mine-")  # console scripts that get passive waiting


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask; all CPUs where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """The cgroup CPU quota in CPUs (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), None without one."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def other_load(samples: int = 10, interval: float = 0.01) -> float:
    """Runnable processes other than this one: the smaller of the 1-minute load average and the runnable
    count now (``/proc/loadavg``'s 4th field, averaged over ``samples`` reads, less this process).

    Both, because each alone misleads: the load average still counts the previous step of a pipeline for
    a minute after it ended (``make demo``: mt-train right after mt-preprocess), and a single runnable
    count is noisy. A background that keeps running shows in both."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return 0.0
    counts = []
    for i in range(samples):
        try:
            counts.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            break
        if i + 1 < samples:
            time.sleep(interval)
    now = sum(counts) / len(counts) if counts else load1
    return max(0.0, min(load1, now))


def pick_threads(
    cpus: int, quota: float | None, load: float, host_cpus: int | None = None, passive: bool = False
) -> int:
    """Threads for this process: the CPUs it may use (``passive``) or those other processes leave free.

    ``cpus``: CPUs in its affinity mask; ``quota``: cgroup CPU quota in CPUs (None: none); ``load``:
    runnable processes other than this one, machine-wide (``other_load``); ``host_cpus``: the machine's
    CPUs the load spreads over (default ``cpus``); ``passive``: OpenMP threads sleep while they wait
    (``passive_waiting``), so all usable CPUs, whatever the load. Spinning, each of our CPUs is busy
    ``load / host_cpus`` of the time, and the free ones, rounded to nearest, are the threads (at least 1):
    on 2 CPUs, load 0.4 -> 2, load 1 -> 1, load 6 -> 1; on 16 CPUs, load 4 -> 12."""
    usable = cpus if quota is None else max(1, min(cpus, math.floor(quota + 1e-9)))
    if passive:
        return usable
    share = min(1.0, max(0.0, load) / max(host_cpus or cpus, 1))
    return max(1, min(usable, math.floor(usable * (1.0 - share) + 0.5)))


def is_cli(argv0: str | None = None) -> bool:
    """Is this process one of the console scripts (``mt-train``, ``python -m mt.train``, ...)?"""
    argv0 = argv0 if argv0 is not None else (sys.argv[0] if getattr(sys, "argv", None) else "")
    name = os.path.basename(argv0)
    return name.startswith(CLI_PREFIXES) or argv0.replace(os.sep, "/").endswith("mt/train/__main__.py")


def passive_wait_early(environ: dict[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for a console script before torch (libgomp) loads; True if set."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in env or not is_cli():
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def passive_waiting(environ: dict[str, str] | None = None) -> bool:
    """Do torch's OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE`` or ``GOMP_SPINCOUNT=0``)?"""
    env = os.environ if environ is None else environ
    return env.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE" or env.get("GOMP_SPINCOUNT", "").strip() == "0"


def configure_threads(threads: int, command: str, say=None) -> int:
    """Set torch's intra-op threads: ``threads`` if > 0 (the user's), ``OMP_NUM_THREADS`` if set (idem),
    else ``pick_threads`` for the current load and wait policy. Says the choice once (stderr) when it is not
    the CPU count."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    cpus, quota, load = cpu_count(), cgroup_quota(), other_load()
    n = pick_threads(cpus, quota, load, host_cpus=max(os.cpu_count() or cpus, cpus), passive=passive_waiting())
    torch.set_num_threads(n)
    if n != cpus:
        quota_note = f", cgroup quota {quota:g}" if quota is not None else ""
        msg = (
            f"{command}: {n} torch thread{'s' if n > 1 else ''} of {cpus} CPUs (other processes keep "
            f"{load:.1f} busy{quota_note}); --threads N to choose"
        )
        (say or (lambda m: print(m, file=sys.stderr, flush=True)))(msg)
    return n


def pick_workers(requested: int, threads: int, cpu: bool, distributed: bool) -> int:
    """mt-train's CPU workers: threads that each run a shard of every batch (``--cpu-workers``).

    ``requested`` > 0 is the user's (1: one shard, the whole batch); 0 (default) takes 2 where the process
    trains on the CPU, alone (not under torchrun, whose ranks already split the batch) and with 2 or more
    torch threads, else 1. Why: OpenMP's threads meet at a barrier in every operator, so on a busy machine
    the whole step waits whenever one of them is off its core; shards in separate threads only meet once per
    batch. 2-core box, d 256 MoE training steps beside 6 busy processes: 736 target tokens/s with 2 workers x
    1 thread vs 505 with 1 x 2 threads (quiet: 2,614-2,680 vs 2,485-2,721). More than 2 by default is not
    measured (with T threads, 2 workers run T // 2 each)."""
    if requested > 0:
        return requested
    return 2 if cpu and not distributed and threads >= 2 else 1
