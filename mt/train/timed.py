"""``python -m mt.train.timed --log FILE --step NAME -- COMMAND ...``: run one recipe step and record its cost.

Why not ``/usr/bin/time``: it is missing or different on many machines (macOS, minimal containers), and a
recipe wants one table of every step. This runs the command as a child process, waits for it, and appends
one TSV row to ``--log``: wall seconds, CPU seconds of the child and everything it waited for (user +
system, from ``getrusage(RUSAGE_CHILDREN)``), the peak resident memory of the largest descendant, the exit
code, the thread setting and the command. On a shared machine wall time grows with the load; CPU time
hardly does, so the pair tells how long the step takes on a quiet one.

The exit code of the command is passed on; a failed step is logged too (``rc`` != 0).
``mt-eval report --timings FILE`` renders the table.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

COLUMNS = ("step", "started", "wall_s", "cpu_s", "user_s", "sys_s", "max_rss_mb", "rc", "threads", "command")


def _rss_mb(ru: resource.struct_rusage) -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    return ru.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run_timed(step: str, command: list[str], log: str | os.PathLike | None) -> int:
    """Run ``command``; append its timing row to ``log`` (if given) and print a one-line summary."""
    if not command:
        raise SystemExit(
            "mt.train.timed: no command given (usage: python -m mt.train.timed --step NAME -- COMMAND ...)"
        )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(command)
    except FileNotFoundError:
        print(
            f"mt.train.timed: {command[0]}: command not found (is the virtual environment's bin/ on PATH?)",
            file=sys.stderr,
        )
        return 127
    # Ctrl-C reaches the child through the terminal's process group; wait for it to finish cleanly.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rc = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    row = {
        "step": step,
        "started": started,
        "wall_s": f"{wall:.3f}",
        "cpu_s": f"{user + sys_:.3f}",
        "user_s": f"{user:.3f}",
        "sys_s": f"{sys_:.3f}",
        "max_rss_mb": f"{_rss_mb(after):.0f}",
        "rc": str(rc),
        "threads": os.environ.get("OMP_NUM_THREADS", ""),
        "command": " ".join(shlex.join(command).split()),
    }
    if log:
        append_row(Path(log), row)
    status = "done" if rc == 0 else f"FAILED (exit {rc})"
    print(
        f"[{step}] {status} in {wall:.1f} s wall, {user + sys_:.1f} s CPU, peak {row['max_rss_mb']} MB",
        file=sys.stderr,
        flush=True,
    )
    return rc


def append_row(path: Path, row: dict[str, str]) -> None:
    """One line per call, written with a single append (a header first when the file is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    text = ("\t".join(COLUMNS) + "\n" if new else "") + "\t".join(row[c] for c in COLUMNS) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mt.train.timed",
        description="Run a command, print and log its wall time, CPU time and peak memory.",
        epilog="example:\n  python -m mt.train.timed --log work/demo/timings.tsv --step spm -- "
        "mt-spm train --corpus c --vocab-size 8000 --out spm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--step", required=True, help="name of the step in the log")
    p.add_argument("--log", default="", help="TSV to append to (columns: " + " ".join(COLUMNS) + ")")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    a = p.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    return run_timed(a.step, cmd, a.log or None)


if __name__ == "__main__":
    sys.exit(main())
