"""Run independent jobs (one per shard) here, in a local process pool, or on Slurm through submitit.

Why: the mining stages are embarrassingly parallel over shards, and every job writes its own output
files atomically and skips finished ones, so a launcher only has to call ``fn(*args)`` for each job and
report failures. Backends:

- ``inline``: one after the other in this process (the default; what tests and small runs use);
- ``local``: a ``ProcessPoolExecutor`` with ``--jobs`` worker processes (spawned, so faiss/OpenMP state
  is fresh in each);
- ``slurm``: one Slurm job per shard through ``submitit.AutoExecutor`` (the engine stopes users run),
  logs under ``--launcher-dir``;
- ``submitit-local`` / ``submitit-debug``: submitit's own local (one process per job) and in-process
  executors, to try a Slurm-style run on a laptop; the debug one opens pdb when a job fails.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mt.common.errors import UserError
from mt.common.flags import arg

BACKENDS = ("inline", "local", "slurm", "submitit-local", "submitit-debug")
GROUP = "launcher (one job per shard)"


@dataclass
class LauncherConfig:
    """Where the jobs run (each field but array_parallelism is also its flag)."""

    launcher: str = arg("inline", "inline: here; local: process pool; slurm: submitit", choices=BACKENDS, group=GROUP)
    jobs: int = arg(2, "local worker processes", group=GROUP)
    launcher_dir: str = arg("work/launcher", "submitit logs", group=GROUP)  # and pickles
    slurm_partition: str | None = arg(None, "Slurm partition", group=GROUP)
    timeout_min: int = arg(120, "Slurm time limit per job, minutes", group=GROUP)
    cpus_per_task: int = arg(4, "Slurm CPUs per job", group=GROUP)
    mem_gb: int = arg(16, "Slurm memory per job, GB", group=GROUP)
    gpus_per_node: int = arg(0, "Slurm GPUs per job", group=GROUP)
    array_parallelism: int = 256


class Launcher:
    """``map(fn, jobs)`` calls ``fn(*job)`` for every job tuple and returns the results in job order."""

    def __init__(self, cfg: LauncherConfig | None = None):
        self.cfg = cfg or LauncherConfig()
        if self.cfg.launcher not in BACKENDS:
            raise UserError(f"unknown launcher {self.cfg.launcher!r}; choose from {', '.join(BACKENDS)}")

    @property
    def in_process(self) -> bool:
        """True when jobs run in this process (so state such as a loaded index is shared with them)."""
        b = self.cfg.launcher
        return b in ("inline", "submitit-debug") or (b == "local" and self.cfg.jobs <= 1)

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple], desc: str = "jobs", progress: bool = True) -> list:
        if not jobs:
            return []
        backend = self.cfg.launcher
        if backend == "inline" or (backend == "local" and self.cfg.jobs <= 1):  # see in_process
            return self._inline(fn, jobs, desc, progress)
        if backend == "local":
            return self._local(fn, jobs, desc, progress)
        return self._submitit(fn, jobs, desc, progress)

    @staticmethod
    def _bar(total: int, desc: str, progress: bool):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="job", disable=not progress, file=sys.stderr)

    def _inline(self, fn, jobs, desc, progress):
        out = []
        with self._bar(len(jobs), desc, progress) as bar:
            for job in jobs:
                out.append(fn(*job))
                bar.update(1)
        return out

    def _local(self, fn, jobs, desc, progress):
        results: list = [None] * len(jobs)
        ctx = mp.get_context("spawn")
        with (
            cf.ProcessPoolExecutor(max_workers=self.cfg.jobs, mp_context=ctx) as pool,
            self._bar(len(jobs), desc, progress) as bar,
        ):
            futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
            try:
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = fut.result()  # re-raises a job's UserError here
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return results

    def _submitit(self, fn, jobs, desc, progress):
        try:
            import submitit
        except ImportError:
            raise UserError("the slurm launcher needs submitit: pip install submitit") from None
        cluster = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}[self.cfg.launcher]
        ex = submitit.AutoExecutor(folder=self.cfg.launcher_dir, cluster=cluster)
        params = dict(
            timeout_min=self.cfg.timeout_min,
            cpus_per_task=self.cfg.cpus_per_task,
            mem_gb=self.cfg.mem_gb,
            gpus_per_node=self.cfg.gpus_per_node,
        )
        if cluster == "slurm":
            params["slurm_array_parallelism"] = self.cfg.array_parallelism
            if self.cfg.slurm_partition:
                params["slurm_partition"] = self.cfg.slurm_partition
        ex.update_parameters(**params)
        if cluster == "debug":  # the debug executor runs each job in this process when its result is asked
            handles = [ex.submit(fn, *job) for job in jobs]
        else:
            handles = ex.map_array(fn, *zip(*jobs))
        if cluster == "slurm":
            print(
                f"launcher: submitted {len(handles)} Slurm jobs ({handles[0].job_id.split('_')[0]}), "
                f"logs in {self.cfg.launcher_dir}",
                file=sys.stderr,
            )
        results = []
        with self._bar(len(handles), desc, progress) as bar:
            for h in handles:
                try:
                    results.append(h.result())
                except Exception as exc:  # submitit wraps remote failures; surface the user's error text
                    text = str(exc).strip().splitlines()
                    last = next((ln for ln in reversed(text) if ln.strip()), repr(exc))
                    raise UserError(
                        f"job {getattr(h, 'job_id', '?')} failed: {last} (logs in {self.cfg.launcher_dir})"
                    ) from exc
                bar.update(1)
        return results
