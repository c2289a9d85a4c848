"""kill -9 during 2-rank expert-parallel training (torchrun, gloo), then resume: the sharded checkpoint
(shared file + one expert shard per rank, weights and Adam state) and the loss log equal an uninterrupted
2-rank run bit for bit.

How the kill is done, and why this way: torchrun starts its workers in their own session and, since the
launcher-death change, each worker asks the kernel for a SIGTERM when its launcher dies
(``mt.common.distributed.watch_launcher``) and then finishes its update and saves. Killing the launcher first (or
its process group) would therefore test that graceful path, not a crash. So the test SIGKILLs both
workers first (found as the launcher's children), then the launcher, and waits until all three are gone:
the flock on ``--save-dir`` (``mt.common.files.exclusive_lock``) goes with rank 0, so the resumed run can take it.

Where the kill lands: the test waits for a sharded save in progress (a ``*.pending`` expert shard, see
``mt.formats.checkpoint._save_sharded``) after update 4, i.e. the save of update 6 (saves every 3 updates); if
polling misses that window it kills at update 7. In the runs measured it always caught a rank writing its
pending shard, before the commit: the resumed run starts from update 3, drops the log records of updates
4-6 and redoes them, and the next save removes the dead writer's temp file. Random routing (Gumbel second
expert), EOM and dropout draw numbers on each rank, so each rank's RNG state must come back too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import make_corpus, one_thread, subprocess_env  # noqa: F401 (autouse)

from mt.formats.checkpoint import load_checkpoint, shard_path
from mt.formats.trainlog import TrainLog

REPO = Path(__file__).resolve().parents[3]
PAIRS = (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn"))
MAX_UPDATE = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("epresume")
    return make_corpus(root, PAIRS, sizes={"deu_Latn-eng_Latn": 40, "eng_Latn-fra_Latn": 24}, n_valid=4, max_len=8)


def _cmd(data: Path, save_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mt.train",
        str(data),
        "--lang-pairs",
        "eng_Latn-deu_Latn,deu_Latn-eng_Latn,eng_Latn-fra_Latn",
        "--arch",
        "transformer_tiny",
        "--save-dir",
        str(save_dir),
        "--max-tokens",
        "120",
        "--lr",
        "3e-3",
        "--warmup-updates",
        "4",
        "--seed",
        "5",
        "--log-interval",
        "1",
        "--no-progress-bar",
        "--moe-freq",
        "1",
        "--moe-expert-count",
        "4",
        "--moe-second-expert-policy",
        "sampling",
        "--moe-eom",
        "0.2",
        "--dropout",
        "0.1",
        "--max-update",
        str(MAX_UPDATE),
        "--save-interval-updates",
        "3",
        "--validate-interval-updates",
        "100",
    ]


def _run(data: Path, save_dir: Path) -> str:
    res = subprocess.run(
        _cmd(data, save_dir), env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr


def _updates(log: Path) -> list[int]:
    """Updates of the train records so far (a line being written may be torn: skipped)."""
    out = []
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "train":
            out.append(int(rec["update"]))
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _kill_mid_run(data: Path, save_dir: Path) -> str:
    """Start the run and SIGKILL its workers, then the launcher, during the sharded save of update 6 (or at
    update 7). Returns where the kill landed."""
    log = save_dir / "train_log.jsonl"
    launcher = subprocess.Popen(
        _cmd(data, save_dir),
        env=subprocess_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        where, t0 = None, time.time()
        while where is None:
            assert launcher.poll() is None, "the run ended before it was killed: " + launcher.stderr.read()[-2000:]
            assert time.time() - t0 < 120, "timeout waiting for training progress"
            last = max(_updates(log), default=0)
            pending = [p.name for p in save_dir.iterdir() if ".pending" in p.name] if last >= 4 else []
            if pending:
                where = f"during the sharded save of update 6 ({', '.join(sorted(pending))} on disk)"
            elif last >= 7:
                where = f"at update {last}"
            else:
                time.sleep(0.001)
        workers = _children(launcher.pid)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        launcher.kill()
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait(timeout=30)
    assert len(workers) == 2
    t0 = time.time()
    while any(_alive(p) for p in workers):  # not our children: wait until the kernel has them gone
        assert time.time() - t0 < 30, "a killed worker is still running"
        time.sleep(0.01)
    assert max(_updates(log)) < MAX_UPDATE
    return where


def _state(save_dir: Path) -> tuple[dict, list[dict]]:
    shared = torch.load(save_dir / "checkpoint_last.pt", weights_only=False, map_location="cpu")
    shards = [
        torch.load(shard_path(save_dir / "checkpoint_last.pt", r), weights_only=False, map_location="cpu")
        for r in range(2)
    ]
    return shared, shards


def _assert_equal_tensors(a, b, where: str) -> None:
    """Nested dicts / lists of tensors and numbers equal exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        if not torch.equal(a, b):
            raise AssertionError(f"{where} differs: max |a - b| = {float((a.double() - b.double()).abs().max()):.3g}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_kill_9_during_expert_parallel_training_then_resume_is_bitwise_exact(data, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _run(data, ref)
    where = _kill_mid_run(data, run)
    err = _run(data, run)
    assert "resumed from" in err, (where, err[-2000:])
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # the dead writers' temp files went

    (a, a_shards), (b, b_shards) = _state(ref), _state(run)
    assert a["num_updates"] == b["num_updates"] == MAX_UPDATE
    assert a["moe"]["shards"] == b["moe"]["shards"] == 2
    _assert_equal_tensors(a["model"], b["model"], "shared model")  # dense weights
    _assert_equal_tensors(a["optimizer"]["state"], b["optimizer"]["state"], "shared optimizer")
    for r in range(2):
        sa, sb = a_shards[r], b_shards[r]
        assert sb["save_id"] == b["moe"]["save_id"] and sb["rank"] == r  # the committed shards of the last save
        assert sa["model"]["encoder.layers.0.ffn.experts.fc1_weight"].shape[0] == 2  # rank r's 2 of the 4 experts
        _assert_equal_tensors(sa["model"], sb["model"], f"rank {r} experts ({where})")
        _assert_equal_tensors(sa["optimizer_state"], sb["optimizer_state"], f"rank {r} expert Adam state")
    # the loss log: every update once, the same numbers
    la, lb = ([r for r in TrainLog(d / "train_log.jsonl").read() if r["type"] == "train"] for d in (ref, run))
    assert [r["update"] for r in lb] == list(range(1, MAX_UPDATE + 1)), where
    assert [r["loss"] for r in la] == [r["loss"] for r in lb], where
    assert [r["aux"]["moe_gate_loss"] for r in la] == [r["aux"]["moe_gate_loss"] for r in lb]
    # the resumed model is whole: loading merges both shards into all 4 experts
    merged = load_checkpoint(run / "checkpoint_last.pt")["model"]["encoder.layers.0.ffn.experts.fc1_weight"]
    assert torch.equal(
        merged,
        torch.cat(
            [
                a_shards[0]["model"]["encoder.layers.0.ffn.experts.fc1_weight"],
                a_shards[1]["model"]["encoder.layers.0.ffn.experts.fc1_weight"],
            ]
        ),
    )
