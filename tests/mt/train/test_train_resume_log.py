"""The loss log after a kill: a run killed before its first checkpoint has nothing to resume from, so the
next run starts over, and must not keep the dead run's records (they doubled updates 1..k in the log)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from train_fixtures import make_corpus, one_thread, wait_for_update  # noqa: F401 (autouse)

from mt.formats.trainlog import TrainLog
from mt.train.cli import train_main as main

REPO = Path(__file__).resolve().parents[3]


def _args(data: Path, save_dir: Path) -> list[str]:
    return [
        str(data),
        "--lang-pairs",
        "eng_Latn-deu_Latn",
        "--arch",
        "transformer_tiny",
        "--save-dir",
        str(save_dir),
        "--max-tokens",
        "120",
        "--log-interval",
        "1",
        "--no-progress-bar",
        "--max-update",
        "5",
        "--save-interval-updates",
        "4",
        "--seed",
        "3",
    ]


def _train(save_dir: Path) -> list[tuple[int, float]]:
    return [(r["update"], r["loss"]) for r in TrainLog(save_dir / "train_log.jsonl").read() if r["type"] == "train"]


def test_run_killed_before_its_first_checkpoint_leaves_no_records_in_the_next_runs_log(tmp_path):
    data = make_corpus(tmp_path, (("deu_Latn", "eng_Latn"),), sizes={"deu_Latn-eng_Latn": 40}, n_valid=4)
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(_args(data, ref)) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mt.train", *_args(data, run)], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    wait_for_update(run / "train_log.jsonl", proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoint_last.pt").exists() and len(_train(run)) >= 1  # killed before saving
    assert main(_args(data, run)) == 0
    assert _train(run) == _train(ref)  # updates 1..5 once each, the same losses
