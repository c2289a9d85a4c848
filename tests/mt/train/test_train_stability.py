"""The training-stability monitor (mt.train.stability): Adam statistics, spike detection, rollback and skip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import assert_refused
from train_fixtures import make_corpus, one_thread  # noqa: F401 (autouse)

from mt.formats import checkpoint as ckpt
from mt.formats.trainlog import TrainLog
from mt.train.optim import InverseSqrtSchedule
from mt.train.stability import STATS, AdamStats, Monitor, SpikeDetector, group_of
from mt.train.trainer import TrainConfig, _Trainer, train


def test_parameter_groups():
    assert group_of("embed_tokens.weight") == "embed"
    assert group_of("encoder.layers.0.self_attn.qkv_proj.weight") == "enc0.attn"
    assert group_of("encoder.layers.0.self_attn_layer_norm.bias") == "enc0.attn"
    assert group_of("decoder.layers.3.encoder_attn.kv_proj.bias") == "dec3.cross_attn"
    assert group_of("decoder.layers.1.ffn.fc1.weight") == "dec1.ffn"
    assert group_of("encoder.layers.1.final_layer_norm.weight") == "enc1.ffn"
    assert group_of("encoder.layers.1.ffn.experts.fc1_weight") == "enc1.experts"
    assert group_of("encoder.layers.1.ffn.moe.experts.fc2_bias") == "enc1.experts"
    assert group_of("encoder.layers.1.ffn.wg.weight") == "enc1.gate"
    assert group_of("decoder.layers.1.ffn.gate.weight") == "dec1.gate"  # CMR's gate
    assert group_of("encoder.layers.1.adapter.down_weight") == "enc1.adapter"
    assert group_of("decoder.layer_norm.weight") == "norm"


class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(50, 8)
        self.encoder = torch.nn.Module()
        self.encoder.layers = torch.nn.ModuleList([torch.nn.Module()])
        self.encoder.layers[0].self_attn = torch.nn.Linear(8, 8)
        self.encoder.layers[0].ffn = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Linear(32, 8))


def _direct(model, opt, samples=None) -> dict[str, dict[str, float]]:
    """The statistics straight from the definitions, in numpy, over all (or the given) coordinates."""
    by: dict[str, list] = {}
    for name, p in model.named_parameters():
        st, (b1, b2), eps = opt.state[p], opt.defaults["betas"], opt.defaults["eps"]
        t = float(st["step"])
        g, m, v = (x.detach().double().numpy().ravel() for x in (p.grad, st["exp_avg"], st["exp_avg_sq"]))
        if samples is not None and samples.get(name) is not None:
            i = samples[name]
            g, m, v = g[i], m[i], v[i]
        vhat = np.sqrt(v / (1 - b2**t))
        r = m / (1 - b1**t) / (vhat + eps)
        by.setdefault(group_of(name), []).append((g, r, vhat < eps))
    out = {}
    for grp, parts in by.items():
        g, r, below = (np.concatenate(x) for x in zip(*parts))
        c = r - r.mean()
        skew, kurt = (c**3).mean() / (c**2).mean() ** 1.5, (c**4).mean() / (c**2).mean() ** 2
        out[grp] = {
            "grad_rms": np.sqrt((g**2).mean()),
            "v_below_eps": below.mean(),
            "update_rms": np.sqrt((r**2).mean()),
            "bimodality": (skew**2 + 1) / kurt,
            "cos": r @ g / np.linalg.norm(r) / np.linalg.norm(g),
        }
    return out


def test_monitor_statistics_equal_a_direct_computation_on_a_toy_optimizer_state():
    torch.manual_seed(0)
    model = _Toy()
    # a large eps puts part of the coordinates (rows of unseen tokens, rarely-hit ones) under epsilon's scale
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-3, weight_decay=0.1, foreach=True)
    for step in range(4):
        tokens = torch.randint(0, 20 if step < 2 else 50, (16,))
        out = model.encoder.layers[0].ffn(model.encoder.layers[0].self_attn(model.embed_tokens(tokens)))
        out.square().mean().backward()
        opt.step()
        if step < 3:
            opt.zero_grad(set_to_none=True)
    full = AdamStats(model.named_parameters(), max_samples=10**6).compute(opt)
    want = _direct(model, opt)
    assert set(full) == {"embed", "enc0.attn", "enc0.ffn"} == set(want)
    for grp in want:
        assert list(full[grp]) == list(STATS)
        for k in STATS:
            assert full[grp][k] == pytest.approx(want[grp][k], rel=1e-9, abs=1e-12), (grp, k)
    assert 0 < full["embed"]["v_below_eps"] < 1  # the case the statistic is there for
    # sampled coordinates: the same numbers over the sample (fixed by the seed, not the training RNG)
    rng_before = torch.get_rng_state()
    sampled = AdamStats(model.named_parameters(), max_samples=64, seed=5)
    assert torch.equal(torch.get_rng_state(), rng_before)
    names = dict(model.named_parameters())
    idx = {n: (None if i is None else i.numpy()) for n in names for p, i, _ in sampled.entries if p is names[n]}
    assert any(i is not None for i in idx.values())
    got, want = sampled.compute(opt), _direct(model, opt, idx)
    for grp in want:
        for k in STATS:
            assert got[grp][k] == pytest.approx(want[grp][k], rel=1e-9, abs=1e-12), (grp, k)


def test_spike_detector_uses_the_running_median_and_spread():
    rng = np.random.default_rng(1)
    det = SpikeDetector(threshold=6.0)
    curve = np.concatenate([np.linspace(9, 5, 60), np.full(100, 5.0)]) + rng.normal(0, 0.05, 160)
    for loss in curve:  # a falling, then flat, noisy curve: no spike
        assert det.check(float(loss)) is None
    spike = det.check(6.0)
    assert spike is not None and spike["loss"] == 6.0 and 4.9 < spike["median"] < 5.1
    assert 6.0 not in det.history  # spikes do not raise the median they are judged by
    assert det.check(float("nan")) is not None
    assert SpikeDetector(threshold=0.0).check(1e9) is None  # 0 = off


def test_a_spike_soon_after_a_rollback_is_not_rolled_back_again():
    """A rollback replays from a restored state; a spike coming back within K updates would send the run back
    to the same checkpoint again and again (seen on a real run: 20 rollbacks to one checkpoint)."""
    m = Monitor(_Toy(), log_interval=1, rollback=20, skip=5, save_interval=10)
    assert m.wants_rollback(50)
    m.rolled_back({"history": [1.0, 2.0]}, spike_update=50)
    assert m.skip_left == 5 and list(m.detector.history) == [1.0, 2.0] and m.rollbacks == 1
    assert not any(m.wants_rollback(u) for u in range(40, 71))
    assert m.wants_rollback(71)
    assert not Monitor(_Toy(), log_interval=1).wants_rollback(50)  # no --spike-rollback: warnings only


def test_a_long_spike_is_warned_about_once_then_every_50_updates():
    m = Monitor(_Toy(), log_interval=1)
    m.detector.history.extend([1.0] * 30)
    warned = [u for u in range(100, 161) if m.check(u, 50.0) and m.should_warn(u)]
    assert warned == [100, 150] and m.spikes == 61  # every spiking update is counted (and logged)
    assert m.check(161, 1.0) is None
    assert m.check(170, 50.0) and m.should_warn(170)  # a new episode


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stability")
    pairs = (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn"))
    return make_corpus(root, pairs, sizes={"deu_Latn-eng_Latn": 60, "eng_Latn-fra_Latn": 20}, n_valid=4, max_len=8)


def _cfg(data, save_dir, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        lang_pairs=["eng_Latn-deu_Latn", "deu_Latn-eng_Latn", "eng_Latn-fra_Latn"],
        arch="transformer_tiny",
        save_dir=str(save_dir),
        max_tokens=160,
        lr=3e-3,
        warmup_updates=5,
        log_interval=1,
        no_progress_bar=True,
        no_epoch_checkpoints=True,
        max_update=30,
        virtual_epoch_size=3000,
        save_interval_updates=4,
        spike_rollback=6,
        spike_skip=3,
        validate_interval_updates=100,
        model_overrides={"dropout": 0.2},
    )
    base.update(kw)
    return TrainConfig(**base)


class _Killed(Exception):
    pass


class _Spy:
    """Update 20 runs once per ``arm()`` at 1000x the learning rate (a real blow-up: the next losses spike);
    every checkpoint a rollback goes back to is copied aside first (it is pruned later in the run); with
    ``kill`` set, the run dies right after its rollback."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.fired, self.copies, self.kill = tmp_path, False, [], False

    def arm(self, kill: bool = False) -> None:
        self.fired, self.kill = False, kill


@pytest.fixture
def injected_spike(monkeypatch, tmp_path):
    spy = _Spy(tmp_path)
    apply, rollback = InverseSqrtSchedule.apply, _Trainer._rollback

    def spiking_apply(self, optimizer, num_updates):
        lr = apply(self, optimizer, num_updates)
        if num_updates == 20 and not spy.fired:
            spy.fired = True
            for g in optimizer.param_groups:
                g["lr"] = lr * 1000
        return lr

    def copying_rollback(self, path, spike):
        spy.copies.append(shutil.copy(path, tmp_path / f"rolled_back_to_{len(spy.copies)}.pt"))
        rollback(self, path, spike)
        if spy.kill:
            raise _Killed

    monkeypatch.setattr(InverseSqrtSchedule, "apply", spiking_apply)
    monkeypatch.setattr(_Trainer, "_rollback", copying_rollback)
    return spy


def _train_losses(log: Path, after: int = 0) -> list[tuple[int, float]]:
    return [(r["update"], r["loss"]) for r in TrainLog(log).read() if r["type"] == "train" and r["update"] > after]


def test_an_injected_spike_is_rolled_back_and_skipped_like_a_run_resumed_by_hand(data, tmp_path, injected_spike):
    run = tmp_path / "run"
    train(_cfg(data, run))
    recs = TrainLog(run / "train_log.jsonl").read()
    (rb,) = [r for r in recs if r["type"] == "rollback"]
    spike, target = rb["spike"]["update"], rb["update"]
    assert spike in (20, 21) and target == (spike - 6) // 4 * 4 and rb["skip"] == 3  # newest snapshot K=6 back
    assert rb["spike"]["loss"] > rb["spike"]["median"] + 6 * rb["spike"]["spread"]
    assert [r["update"] for r in rb["abandoned"] if r["type"] == "train"] == list(range(target + 1, spike + 1))
    ups = [r["update"] for r in recs if r["type"] == "train"]
    assert ups == list(range(1, 31))  # the log stays ordered: the abandoned updates live in the rollback record
    assert all("stability" in r and "monitor_ms" in r for r in recs if r["type"] == "train")
    kept = [u for u, _ in ckpt.interval_checkpoints(run)]
    assert kept == [20, 24, 28]  # as far back as --spike-rollback 6 needs with --save-interval-updates 4

    # by hand: the same checkpoint, the data position moved 3 batches on, no injection, no rollback
    (copy,) = injected_spike.copies
    state = torch.load(copy, weights_only=True)
    assert state["num_updates"] == target and state["stability"]["skip_left"] == 0
    state["data_state"]["position"] += 3
    hand = tmp_path / "hand"
    hand.mkdir()
    ckpt.save_checkpoint(state, hand / ckpt.LAST)
    train(_cfg(data, hand, spike_rollback=0, spike_skip=0))
    a, b = ckpt.load_checkpoint(run / ckpt.LAST)["model"], ckpt.load_checkpoint(hand / ckpt.LAST)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _train_losses(run / "train_log.jsonl", target) == _train_losses(hand / "train_log.jsonl", target)


def test_a_run_killed_right_after_its_rollback_resumes_exactly(data, tmp_path, injected_spike):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(_cfg(data, whole))
    injected_spike.arm(kill=True)
    with pytest.raises(_Killed):
        train(_cfg(data, parts))
    injected_spike.kill = False  # the injection has fired: only the checkpoint can make the rest match
    state = ckpt.load_checkpoint(parts / ckpt.LAST)
    assert state["stability"]["skip_left"] == 3 and state["num_updates"] < 20
    train(_cfg(data, parts))
    a, b = ckpt.load_checkpoint(whole / ckpt.LAST)["model"], ckpt.load_checkpoint(parts / ckpt.LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _train_losses(whole / "train_log.jsonl") == _train_losses(parts / "train_log.jsonl")
    assert [r["type"] for r in TrainLog(parts / "train_log.jsonl").read()].count("rollback") == 1


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--spike-rollback", "5"], "set --save-interval-updates"),
        (["--spike-skip", "5"], "only applies with --spike-rollback"),
        (["--spike-rollback", "5", "--save-interval-updates", "2", "--spike-threshold", "0"], "needs spike detection"),
        (["--spike-threshold", "-1"], "--spike-threshold must be >= 0"),
    ],
)
def test_stability_flag_mistakes_are_one_line_errors(data, tmp_path, extra, expect, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    args = [
        str(data),
        "--lang-pairs",
        "eng_Latn-deu_Latn",
        "--arch",
        "transformer_tiny",
        "--save-dir",
        str(tmp_path / "ck"),
        "--max-update",
        "2",
        *extra,
    ]
    assert_refused("mt-train", args, tmp_path, expect=expect)
