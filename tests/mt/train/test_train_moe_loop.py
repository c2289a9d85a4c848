"""mt-train with sparse MoE: logged routing stats, expert parallelism under torchrun (2 gloo ranks) against
one process, checkpoint re-sharding W=2 -> W=1 and W=1 -> W=2, exact kill-and-resume."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import make_corpus, one_thread, subprocess_env, tiny_train_args, wait_for_update  # noqa: F401 (autouse)

from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import collate, load_direction
from mt.formats.checkpoint import load_checkpoint
from mt.formats.trainlog import TrainLog
from mt.generate.greedy import greedy_decode
from mt.models.config import TransformerConfig
from mt.models.transformer import Transformer
from mt.train.cli import train_main as main

PAIRS = (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn"))
REPO = Path(__file__).resolve().parents[3]
MOE = ["--moe-freq", "1", "--moe-expert-count", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("moeloop")
    return make_corpus(root, PAIRS, sizes={"deu_Latn-eng_Latn": 48, "eng_Latn-fra_Latn": 24}, n_valid=8, max_len=10)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mt.train",
        *args,
    ]
    res = subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _train_records(save_dir: Path) -> list[dict]:
    return [r for r in TrainLog(save_dir / "train_log.jsonl").read() if r["type"] == "train"]


def _assert_same_weights(a_path: Path, b_path: Path, tol: float = 1e-4) -> None:
    a, b = load_checkpoint(a_path)["model"], load_checkpoint(b_path)["model"]
    assert a.keys() == b.keys()
    # attention key biases have an exactly-zero gradient up to round-off (see test_train_loop): skipped
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if not k.endswith("kv_proj.bias"))
    assert worst < tol, worst


def test_moe_cmr_hyper_adapter_training_logs_routing_stats_and_decodes(data, tmp_path):
    save = tmp_path / "ck"
    assert (
        main(
            tiny_train_args(
                data,
                save,
                "--max-update",
                "4",
                "--moe-freq",
                "2",
                "--moe-expert-count",
                "4",
                "--moe-eom",
                "0.2",
                "--moe-cmr",
                "--cmr-gate-drop",
                "0.1",
                "--moe-z-loss-wt",
                "0.001",
                "--hyper-adapters",
                "--hyper-adapter-bottleneck",
                "16",
            )
        )
        == 0
    )
    recs = _train_records(save)
    assert len(recs) == 4
    r = recs[-1]
    assert set(r["aux"]) == {"moe_gate_loss", "moe_z_loss", "cmr_gate_loss"} and r["aux"]["moe_gate_loss"] >= 0.9
    stats = r["moe"]
    for tag in ("enc1", "dec1"):  # layer 1 of each stack is MoE (--moe-freq 2)
        assert sum(stats[f"moe/{tag}/load"]) == pytest.approx(1.0) and len(stats[f"moe/{tag}/load"]) == 4
        assert 0.0 <= stats[f"moe/{tag}/dropped"] < 0.5 and stats[f"moe/{tag}/balance"] >= 1.0 - 1e-6
        assert 0.0 < stats[f"cmr/{tag}/gate"] < 1.0
    assert set(stats["cmr/enc1/gate@src_lang"]) == {"eng_Latn", "deu_Latn"}  # sources of the three directions
    assert set(stats["cmr/dec1/gate@tgt_lang"]) == {"eng_Latn", "deu_Latn", "fra_Latn"}
    state = load_checkpoint(save / "checkpoint_last.pt")
    assert state["moe"]["shards"] == 1 and len(state["moe"]["expert_keys"]) == 8
    cfg = TransformerConfig.from_dict(state["model_config"])
    assert cfg.moe_cmr and cfg.moe_eom == 0.2 and cfg.moe_freq == 2 and cfg.hyper_adapters
    model = Transformer(cfg)
    model.load_state_dict(state["model"])
    d = Dictionary.load(data / "dict.txt")
    ds = load_direction(data, "valid", "eng_Latn-deu_Latn", d, d.langs())
    items = [(*ds.item(i), ds, 0) for i in range(4)]
    batch = collate(items, d.pad())
    hyps = greedy_decode(
        model,
        batch.src_tokens,
        torch.full((4,), ds.tgt_lang_token),
        d.eos(),
        src_lang=batch.src_lang,
        tgt_lang=batch.tgt_lang,
    )
    assert len(hyps) == 4


@pytest.mark.slow
def test_expert_parallel_two_ranks_match_one_process_and_reshard_both_ways(data, tmp_path):
    """2 gloo ranks x 2 experts each == 1 process x 4 experts; a W=1 checkpoint resumes on 2 ranks and a
    W=2 checkpoint on 1 process, both ending where the uninterrupted single-process run ends."""
    # --batch-size 3 / --max-tokens 24: uneven shards and 1-sentence batches (rank 1 runs zero-weight
    # dummies); capacity factor 2 with 4 experts: no token over capacity, so routing is identical to one
    # process; balance loss on, gradient clipping on (the norm spans the experts of both ranks)
    extra = [
        *MOE,
        "--moe-second-expert-policy",
        "all",
        "--moe-train-capacity-factor",
        "2",
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
        "--validate-interval-updates",
        "4",
        "--eval-chrf",
        "3",
        "--save-interval-updates",
        "4",
    ]
    a, w1, w2 = tmp_path / "a", tmp_path / "w1", tmp_path / "w2"
    assert main(tiny_train_args(data, a, *extra, "--max-update", "4")) == 0
    shutil.copytree(a, w1)
    assert main(tiny_train_args(data, a, *extra, "--max-update", "8")) == 0  # the reference, ends at update 8

    _torchrun(tiny_train_args(data, w2, *extra, "--max-update", "4"))
    assert sorted(p.name for p in w2.glob("checkpoint_last*")) == [
        "checkpoint_last-rank-0.pt",
        "checkpoint_last-rank-1.pt",
        "checkpoint_last.pt",
    ]
    shard = torch.load(w2 / "checkpoint_last-rank-1.pt", weights_only=True)
    assert shard["model"]["encoder.layers.0.ffn.experts.fc1_weight"].shape[0] == 2  # 2 of the 4 experts
    _assert_same_weights(w1 / "checkpoint_last.pt", w2 / "checkpoint_last.pt")
    la, lb = _train_records(w1), _train_records(w2)
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)
    assert [r["aux"]["moe_gate_loss"] for r in la] == pytest.approx([r["aux"]["moe_gate_loss"] for r in lb], rel=1e-5)
    assert la[-1]["moe"]["moe/enc0/load"] == pytest.approx(lb[-1]["moe"]["moe/enc0/load"], abs=1e-9)
    va = [r for r in TrainLog(w1 / "train_log.jsonl").read() if r["type"] == "valid"]
    vb = [r for r in TrainLog(w2 / "train_log.jsonl").read() if r["type"] == "valid"]
    assert va[-1]["loss"] == pytest.approx(vb[-1]["loss"], rel=1e-5) and "chrf" in vb[-1]

    _torchrun(tiny_train_args(data, w1, *extra, "--max-update", "8"))  # W=1 checkpoint -> 2 ranks
    assert main(tiny_train_args(data, w2, *extra, "--max-update", "8")) == 0  # W=2 checkpoint -> 1 process
    _assert_same_weights(a / "checkpoint_last.pt", w1 / "checkpoint_last.pt")
    _assert_same_weights(a / "checkpoint_last.pt", w2 / "checkpoint_last.pt")
    ref = [r["loss"] for r in _train_records(a)]
    for other in (w1, w2):
        assert [r["loss"] for r in _train_records(other)] == pytest.approx(ref, rel=1e-5)
    # the optimizer state travelled too: one process saved again, no shards left behind as current
    st = load_checkpoint(w2 / "checkpoint_last.pt")
    assert st["moe"]["shards"] == 1 and st["num_updates"] == 8


@pytest.mark.slow
def test_expert_parallel_cmr_budget_loss_and_fairseq_capacity_match_one_process(data, tmp_path):
    """The CMR budget loss is taken over the tokens of both ranks (an all-reduce) and the fairseq capacity
    rule takes the largest rank's B x T (an all-reduce max): 2 ranks still make the one-process updates
    (capacity factor 2 with 4 experts leaves no assignment over capacity under either rule)."""
    extra = [
        *MOE,
        "--moe-second-expert-policy",
        "all",
        "--moe-train-capacity-factor",
        "2",
        "--dropout",
        "0",
        "--batch-size",
        "3",
        "--max-tokens",
        "24",
        "--update-freq",
        "2",
        "--max-update",
        "4",
        "--moe-cmr",
        "--cmr-gate-loss-wt",
        "0.1",
        "--cmr-gate-loss-p",
        "0.8",
        "--moe-train-capacity-rule",
        "fairseq",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(tiny_train_args(data, one, *extra)) == 0
    _torchrun(tiny_train_args(data, two, *extra))
    _assert_same_weights(one / "checkpoint_last.pt", two / "checkpoint_last.pt")
    la, lb = _train_records(one), _train_records(two)
    assert [r["aux"]["cmr_gate_loss"] for r in la] == pytest.approx([r["aux"]["cmr_gate_loss"] for r in lb], rel=1e-5)
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)
    assert all(r["moe"]["moe/enc0/dropped"] == 0 for r in la + lb)


@pytest.mark.slow
def test_sigkill_and_resume_is_exact_with_moe(data, tmp_path):
    """Gumbel second-expert sampling, EOM, FOM and dropout all draw random numbers: still bitwise."""
    extra = [
        *MOE,
        "--moe-eom",
        "0.2",
        "--moe-fom",
        "0.1",
        "--dropout",
        "0.2",
        "--max-update",
        "16",
        "--save-interval-updates",
        "5",
        "--update-freq",
        "2",
    ]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(tiny_train_args(data, ref, *extra)) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "mt.train", *tiny_train_args(data, run, *extra)],
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    killed = wait_for_update(run / "train_log.jsonl", proc, 7)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed < 16
    done = subprocess.run(
        [sys.executable, "-m", "mt.train", *tiny_train_args(data, run, *extra)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0 and "resumed from" in done.stderr, done.stderr[-2000:]
    a, b = load_checkpoint(ref / "checkpoint_last.pt"), load_checkpoint(run / "checkpoint_last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["loss"] for r in _train_records(ref)] == [r["loss"] for r in _train_records(run)]
