"""mt-train --cpu-workers: each batch as shards in threads at once (one meeting per batch, not per operator)."""

from __future__ import annotations

import shutil

import pytest
import torch
from train_fixtures import make_corpus, one_thread, tiny_train_args  # noqa: F401 (autouse)

from mt.common.threads import pick_workers
from mt.formats.checkpoint import load_checkpoint
from mt.formats.trainlog import TrainLog
from mt.train.cli import train_main as main

PAIRS = (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn"))
MOE = ["--moe-freq", "1", "--moe-expert-count", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    return make_corpus(root, PAIRS, sizes={"deu_Latn-eng_Latn": 48, "eng_Latn-fra_Latn": 24}, n_valid=8, max_len=10)


def _records(save_dir) -> list[dict]:
    return [r for r in TrainLog(save_dir / "train_log.jsonl").read() if r["type"] == "train"]


def test_pick_workers():
    assert pick_workers(0, 2, cpu=True, distributed=False) == 2
    assert pick_workers(0, 16, cpu=True, distributed=False) == 2  # more than 2 by default: not measured
    assert pick_workers(0, 1, cpu=True, distributed=False) == 1
    assert pick_workers(0, 2, cpu=False, distributed=False) == 1  # GPU
    assert pick_workers(0, 2, cpu=True, distributed=True) == 1  # torchrun ranks already split the batch
    assert pick_workers(3, 1, cpu=True, distributed=False) == 3  # the user's choice


def test_two_workers_compute_the_one_shard_update(data, tmp_path):
    """Without random draws and with no token over capacity, 2 shard threads make the update 1 makes: same
    losses, routing stats and weights (up to float summation order). The balance and z-losses are taken per
    shard (as per micro-batch with --update-freq: they are not sums over tokens), so their weights are 0 here."""
    extra = [
        *MOE,
        "--moe-second-expert-policy",
        "all",
        "--moe-train-capacity-factor",
        "2",
        "--moe-gate-loss-wt",
        "0",
        "--moe-z-loss-wt",
        "0",
        "--dropout",
        "0",
        "--batch-size",
        "3",
        "--max-tokens",
        "24",
        "--update-freq",
        "2",
        "--clip-norm",
        "0.5",
        "--max-update",
        "6",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(tiny_train_args(data, one, *extra, "--cpu-workers", "1")) == 0
    assert main(tiny_train_args(data, two, *extra, "--cpu-workers", "2")) == 0
    assert torch.get_num_threads() == 1  # the caller's setting is back
    la, lb = _records(one), _records(two)
    assert len(la) == len(lb) == 6
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)
    assert [r["gnorm"] for r in la] == pytest.approx([r["gnorm"] for r in lb], rel=1e-4)  # Adam hides a scale
    for key in ("moe/enc0/load", "moe/dec1/load"):
        assert la[-1]["moe"][key] == pytest.approx(lb[-1]["moe"][key], abs=1e-6)
    a, b = load_checkpoint(one / "checkpoint_last.pt")["model"], load_checkpoint(two / "checkpoint_last.pt")["model"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if not k.endswith("kv_proj.bias"))
    assert worst < 1e-4, worst


def test_two_workers_with_dropout_and_moe_noise_are_reproducible_and_resume_exactly(data, tmp_path):
    """Dropout, EOM and the sampled second expert draw from each worker's own generator, seeded in a fixed
    order from torch's: two runs agree, and a run stopped at update 3 and resumed ends where an
    uninterrupted one does."""
    extra = [*MOE, "--moe-eom", "0.2", "--dropout", "0.1", "--attention-dropout", "0.1", "--cpu-workers", "2"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(tiny_train_args(data, a, *extra, "--max-update", "6")) == 0
    assert main(tiny_train_args(data, b, *extra, "--max-update", "6")) == 0
    assert main(tiny_train_args(data, c, *extra, "--max-update", "3")) == 0
    assert main(tiny_train_args(data, c, *extra, "--max-update", "6")) == 0
    ref = [r["loss"] for r in _records(a)]
    assert [r["loss"] for r in _records(b)] == ref
    assert [r["loss"] for r in _records(c)] == ref
    wa, wc = load_checkpoint(a / "checkpoint_last.pt")["model"], load_checkpoint(c / "checkpoint_last.pt")["model"]
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    # and the draws are really random: another seed, other losses
    d = tmp_path / "d"
    assert main(tiny_train_args(data, d, *extra, "--max-update", "6", "--seed", "8")) == 0
    assert [r["loss"] for r in _records(d)] != ref
    shutil.rmtree(d)


def test_cpu_workers_must_not_be_negative(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(tiny_train_args(data, tmp_path / "x", "--cpu-workers", "-1", "--max-update", "1"))
    assert exc.value.code == 2
    assert "--cpu-workers must be 0 (automatic) or more, got -1" in capsys.readouterr().err
