"""Sparse-MoE inference: dynamic vs static gating, expert buffering (LRU cache, memory-mapped experts),
routing statistics and expert placement, expert-parallel inference with a placement (2 gloo ranks)."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from decode_fixtures import make_checkpoint
from train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

from mt.common import pagemem
from mt.common.errors import UserError
from mt.generate.cli import generate_main, moe_stats_main
from mt.generate.expert_cache import ExpertCache
from mt.generate.loading import load_model
from mt.generate.translator import Translator
from mt.models.config import ForwardContext, arch_config
from mt.models.moe import MoELayer, expert_parallel_, permute_experts_, top2_route
from mt.models.moe.placement import (
    balanced_placement,
    contiguous,
    imbalance,
    placement_from_stats,
    rank_loads,
    read_placement,
    round_robin,
)

REPO = Path(__file__).resolve().parents[3]
E = 8


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory):
    """An MoE checkpoint: every layer sparse, 8 experts, top-2 with both experts kept."""
    return make_checkpoint(
        tmp_path_factory.mktemp("moeinf"), moe_freq=1, moe_expert_count=E, moe_second_expert_policy="all"
    )


def _sources() -> list[list[int]]:
    return [[5 + (i * 7 + j * 3) % 40 for j in range(2 + i % 7)] for i in range(16)]


def _translate(tr: Translator, **kw):
    out = tr.translate_ids(_sources(), "eng_Latn", "deu_Latn", **kw)
    return [h[0].tokens for h in out], [h[0].score for h in out]


def _layer(seed: int = 0, **kw) -> MoELayer:
    cfg = arch_config(
        "transformer_tiny",
        vocab_size=40,
        dropout=0.0,
        moe_freq=1,
        moe_expert_count=E,
        moe_second_expert_policy="all",
        **kw,
    ).validate()
    torch.manual_seed(seed)
    return MoELayer(cfg, 0, False).eval()


class _Recorder:
    """A runner that records the rows each expert runs on, then runs the layer's experts."""

    def __init__(self, layer: MoELayer) -> None:
        self.layer, self.calls = layer, []

    def __call__(self, x, counts):
        self.calls.append(list(counts))
        return self.layer.experts(x, counts)


# --- gating ----------------------------------------------------------------------------------------
def test_dynamic_and_static_gating_agree_when_nothing_overflows_and_static_pads():
    layer = _layer()
    x = torch.randn(3, 11, 64)
    pad = torch.zeros(3, 11, dtype=torch.bool)
    pad[1, 7:] = True
    ctx = ForwardContext(src_pad_mask=pad)
    rec = _Recorder(layer)
    layer.runner = rec
    with torch.no_grad():
        dyn = layer(x, ctx)
        N = int((~pad).sum())
        assert sum(rec.calls[-1]) == 2 * N  # dynamic: exactly the 2N assignments, experts without rows skipped
        outs = {}
        for how in ("einsum", "index"):
            layer.gating, layer.static_dispatch = "static", how
            outs[how] = layer(x, ctx)
            assert rec.calls[-1] == [N] * E  # static, fraction 1.0: every expert runs on C = N slots
    for how, out in outs.items():
        torch.testing.assert_close(out, dyn, rtol=1e-5, atol=1e-6)


def test_static_gating_drops_over_capacity_like_top2_route():
    layer = _layer(seed=1, moe_eval_capacity_token_fraction=0.1)
    x = torch.randn(1, 40, 64)
    with torch.no_grad():
        layer.gating = "static"
        static = layer(x, ForwardContext())[0]
        layer.gating = "dynamic"
        dynamic = layer(x, ForwardContext())[0]
        # reference: the kept (token, expert, weight) of top2_route with capacity ceil(0.1 * 40) = 4
        r = top2_route(x[0] @ layer.wg.weight.t(), 4, "all")
        assert int(r.dropped) > 0
        ex = layer.experts
        ref = torch.zeros(40, 64)
        for t, e, w in zip(r.token.tolist(), r.expert.tolist(), r.weight.tolist()):
            h = torch.relu(x[0, t] @ ex.fc1_weight[e].t() + ex.fc1_bias[e])
            ref[t] += w * (h @ ex.fc2_weight[e].t() + ex.fc2_bias[e])
    torch.testing.assert_close(static, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(static, dynamic, atol=1e-4)  # dynamic has no capacity: nothing dropped


def test_translator_static_and_dynamic_gating_translate_identically(moe_model):
    ck, _ = moe_model
    dyn = Translator(ck)
    stat = Translator(ck, moe_gating="static")
    assert all(m.gating == "static" for _, m in stat.moe.layers) and len(stat.moe.layers) == 4
    a, b = _translate(dyn), _translate(stat)
    assert a[0] == b[0]
    assert a[1] == pytest.approx(b[1], abs=1e-5)
    with pytest.raises(UserError, match="dynamic or static"):
        Translator(ck, moe_gating="padded")


# --- expert buffering -------------------------------------------------------------------------------
def test_lru_cache_hits_misses_and_eviction_order():
    torch.manual_seed(0)
    src = [tuple(torch.randn(*s) for s in ((6, 4), (6,), (4, 6), (4,))) for _ in range(5)]
    cache = ExpertCache(src, capacity=2)
    x = torch.randn(3, 4)

    def call(*experts):
        counts = [0] * 5
        for e in experts:
            counts[e] = 1
        rows = torch.stack([x[i % 3] for i in range(len(experts))])
        y = cache(rows, counts)
        for i, e in enumerate(sorted(experts)):  # the right expert ran on each row
            w1, b1, w2, b2 = src[e]
            torch.testing.assert_close(y[i], torch.relu(rows[i] @ w1.t() + b1) @ w2.t() + b2)
        return cache.stats.hits, cache.stats.misses

    assert call(0, 1) == (0, 2)  # cold start
    assert call(0) == (1, 2)  # 0 is now most recently used, 1 least
    assert call(2) == (1, 3) and sorted(cache.resident_experts()) == [0, 2]  # 1 evicted
    assert call(1, 2) == (2, 4)  # hits run first: 2 is touched, then 1 evicts 0
    assert sorted(cache.resident_experts()) == [1, 2]
    assert cache.stats.hit_rate == pytest.approx(2 / 6)
    assert cache.resident_bytes() == 2 * cache.expert_bytes


def test_expert_cache_of_one_translates_exactly_like_no_cache(moe_model):
    ck, _ = moe_model
    ref = _translate(Translator(ck))
    for offload in ("mmap", "host"):
        tr = Translator(ck, expert_cache=1, expert_offload=offload)
        assert _translate(tr) == ref
        s = tr.moe_stats()
        assert s["misses"] >= E and s["hits"] + s["misses"] > 0 and 0 <= s["hit_rate"] < 1
        n_layers = len(s["layers"])
        assert s["resident_bytes"] == n_layers * next(iter(tr.moe.caches().values())).expert_bytes  # one slot per layer
        assert "hit rate" in tr.moe_summary()
        if offload == "mmap":
            assert s["host_bytes"] == 0 and s["mapped_bytes"] < s["full_expert_bytes"] / 4
        else:
            assert s["host_bytes"] == s["full_expert_bytes"]
    full = Translator(ck, expert_cache=E)  # everything fits: loaded up front, every use a hit
    assert _translate(full) == ref and full.moe_stats()["misses"] == 0
    # bf16: the slots hold bf16 copies, converted when brought in; same as all experts resident in bf16
    bf = Translator(ck, bf16=True)
    assert bf.moe_stats()["host_bytes"] == bf.moe_stats()["full_expert_bytes"]  # the fp32 originals stay
    assert _translate(Translator(ck, bf16=True, expert_cache=1)) == _translate(bf)


def test_expert_parallel_trained_checkpoint_shards_are_memory_mapped_for_inference(moe_model, tmp_path, monkeypatch):
    """A checkpoint saved by 2 expert-parallel ranks (experts in -rank-{r}.pt files) translates with its
    experts memory-mapped from the rank files, exactly like the single-file checkpoint."""
    from mt.common import distributed
    from mt.formats import checkpoint as ckpt

    ck, data = moe_model
    state = ckpt.load_checkpoint(ck)
    keys = [k for k in state["model"] if ".experts." in k]
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, src=0: "s1")
    path = tmp_path / "checkpoint_last.pt"
    for r in (0, 1):  # what the two ranks write (barriers are no-ops in one process)
        st = dict(
            state,
            optimizer={"state": {}, "param_groups": []},
            moe={"shards": 2, "expert_keys": keys, "expert_param_ids": []},
        )
        st["model"] = {
            k: (v[r * E // 2 : (r + 1) * E // 2].clone() if k in keys else v) for k, v in state["model"].items()
        }
        ckpt.save_checkpoint(st, path, rank=r, world=2)
    assert (tmp_path / "checkpoint_last-rank-1.pt").is_file()
    ref = _translate(Translator(ck))
    tr = Translator(path, data=data, expert_cache=3)
    assert _translate(tr) == ref
    assert sorted(p.name for p in tr.moe.mapped_files) == ["checkpoint_last-rank-0.pt", "checkpoint_last-rank-1.pt"]


def _evict_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/pagemap is Linux's")
def test_memory_mapped_experts_touch_only_the_pages_of_routed_experts(tmp_path):
    # 16 experts of 2 x 128 KiB (fc1, fc2) each; a hand-set gate sends every token to experts 5 and 9
    ck, _ = make_checkpoint(
        tmp_path,
        moe_freq=1,
        moe_expert_count=16,
        moe_second_expert_policy="all",
        encoder_ffn_embed_dim=512,
        decoder_ffn_embed_dim=512,
    )
    _evict_page_cache(ck)  # as when the checkpoint comes from disk (a fresh write leaves huge folios mapped together)
    loaded = load_model(ck, need_spm=False, lazy_experts=True)
    name = "encoder.layers.1.ffn"
    layer = loaded.model.get_submodule(name)
    assert layer.experts.fc1_weight.numel() == 0  # the model holds no expert weights
    src = loaded.expert_source[name]

    def weight_pages() -> list[int]:
        return [
            pagemem.present_bytes([pagemem.tensor_range(w[0]), pagemem.tensor_range(w[2])]) // pagemem.PAGE for w in src
        ]

    size = (src[0][0].nbytes + src[0][2].nbytes) // pagemem.PAGE
    assert sum(weight_pages()) <= 4  # nothing of the experts is mapped after loading (boundary pages aside)
    layer.runner = ExpertCache(src, 4, mapped=True, release_pages=False)
    with torch.no_grad():
        layer.wg.weight.zero_()
        layer.wg.weight[5] = 1.0
        layer.wg.weight[9] = 0.5
        layer(torch.ones(2, 9, 64) + 0.01 * torch.randn(2, 9, 64), ForwardContext())
    pages = weight_pages()
    assert layer.runner.stats.misses == 2 and sorted(layer.runner.resident_experts()) == [5, 9]
    assert pages[5] >= size and pages[9] >= size
    others = [p for e, p in enumerate(pages) if e not in (5, 9)]
    # The kernel maps a fault's neighbours that are in the page cache (fault-around, 64 KiB; measured here:
    # up to ~100 KiB of experts 4, 6, 8, 10, and a few pages of experts 0 / 15, which border the tensors
    # read around them); the experts away from all of that are untouched, and nothing is read whole.
    assert sum(others) < 0.25 * size * len(others), str(pages)
    far = [e for e in range(1, 15) if min(abs(e - 5), abs(e - 9)) >= 2]
    assert far and all(pages[e] <= 2 for e in far), str(pages)
    # with page release (the default) the mapped pages leave the process again: memory = the slots
    layer.runner = ExpertCache(src, 4, mapped=True)
    with torch.no_grad():
        layer(torch.ones(2, 9, 64), ForwardContext())
    assert sum(weight_pages()) <= 4
    assert layer.runner.mapped_bytes() <= 8 * pagemem.PAGE


# --- statistics and placement ----------------------------------------------------------------------
def _optimal_two_way(load: list[float]) -> float:
    n = len(load)
    best = float("inf")
    for half in itertools.combinations(range(n), n // 2):
        a = sum(load[e] for e in half)
        best = min(best, max(a, sum(load) - a))
    return best / (sum(load) / 2)


def test_placement_balances_skewed_load_better_than_round_robin():
    load = [50.0, 1, 40, 1, 30, 1, 20, 1]  # the even experts are hot: round-robin puts them all on rank 0
    placed = balanced_placement(load, 2)
    assert sorted(e for r in placed for e in r) == list(range(8)) and all(len(r) == 4 for r in placed)
    assert imbalance(load, round_robin(8, 2)) == pytest.approx(140 / 72)
    assert imbalance(load, contiguous(8, 2)) == pytest.approx(92 / 72)
    assert imbalance(load, placed) == pytest.approx(1.0)
    rng = random.Random(0)
    for trial in range(20):  # Zipf-like skew, shuffled: the placement reaches the optimum of a brute-force search
        load = [1000.0 / (k + 1) ** 1.2 + rng.random() for k in range(8)]
        rng.shuffle(load)
        placed = balanced_placement(load, 2)
        assert imbalance(load, placed) <= imbalance(load, round_robin(8, 2)) + 1e-12
        assert imbalance(load, placed) <= imbalance(load, contiguous(8, 2)) + 1e-12
        assert imbalance(load, placed) == pytest.approx(_optimal_two_way(load), rel=1e-9)
    load = [float(rng.randint(1, 100)) for _ in range(16)]
    placed = balanced_placement(load, 4)
    assert all(len(r) == 4 for r in placed)
    assert max(rank_loads(load, placed)) <= max(rank_loads(load, round_robin(16, 4)))
    with pytest.raises(UserError, match="evenly"):
        balanced_placement([1.0] * 6, 4)


def test_placement_file_round_trip_and_errors(tmp_path):
    stats = {"num_experts": 4, "layers": {"enc0": {"assignments": [9, 1, 8, 2]}, "dec1": {"assignments": [1, 1, 1, 1]}}}
    pl = placement_from_stats(stats, 2)
    assert pl["imbalance"]["enc0"]["placement"] == pytest.approx(1.0)
    assert pl["imbalance"]["enc0"]["contiguous"] == pytest.approx(1.0) and pl["imbalance"]["enc0"][
        "round_robin"
    ] == pytest.approx(17 / 10)
    path = tmp_path / "placement.json"
    path.write_text(json.dumps(pl))
    got = read_placement(path, {"enc0": 4, "dec1": 4}, 2)
    assert sorted(got["enc0"][0] + got["enc0"][1]) == [0, 1, 2, 3]
    with pytest.raises(UserError, match="this run has 4"):
        read_placement(path, {"enc0": 4, "dec1": 4}, 4)
    with pytest.raises(UserError, match="no placement for MoE layer enc3"):
        read_placement(path, {"enc3": 4}, 2)
    pl["layers"]["enc0"] = [[0, 1], [1, 2]]
    path.write_text(json.dumps(pl))
    with pytest.raises(UserError, match="exactly once"):
        read_placement(path, {"enc0": 4, "dec1": 4}, 2)
    path.write_text("{")
    with pytest.raises(UserError, match="cannot read"):
        read_placement(path, {"enc0": 4}, 2)


def test_permuting_experts_keeps_the_function_and_sharding_follows_the_placement():
    layer = _layer(seed=3)
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        ref = layer(x, ForwardContext())
        order = [3, 7, 0, 5, 1, 6, 2, 4]
        w1 = layer.experts.fc1_weight.detach().clone()
        permute_experts_(layer, order)
        torch.testing.assert_close(layer(x, ForwardContext()), ref)
        assert torch.equal(layer.experts.fc1_weight[1], w1[7])
    model = torch.nn.ModuleList([_layer(seed=4)])
    model[0].tag = "enc0"
    full = model[0].experts.fc1_weight.detach().clone()
    expert_parallel_(model, 1, 2, placement={"enc0": [[6, 1, 2, 3], [0, 4, 5, 7]]})
    assert torch.equal(model[0].experts.fc1_weight, full[[0, 4, 5, 7]])


def test_mt_moe_stats_counts_every_assignment_and_writes_a_placement(moe_model, tmp_path, capsys):
    ck, _ = moe_model
    text = tmp_path / "in.txt"
    lines = ["the cat sees the dog", "a house", "", "we go home now", "the red car is fast", "good day"]
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "st" / "stats.json"
    assert (
        moe_stats_main(
            [
                "--path",
                str(ck),
                "--input",
                str(text),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn,fra_Latn",
                "--sample",
                "4",
                "--out",
                str(out),
                "--num-ranks",
                "2",
                "--coactivation",
                "--beam",
                "2",
                "--no-progress-bar",
            ]
        )
        == 0
    )
    stats = json.loads(out.read_text())
    assert stats["sentences"] == 4 and stats["directions"] == ["eng_Latn-deu_Latn", "eng_Latn-fra_Latn"]
    tr = Translator(ck)
    kept = [s for s in lines if s]
    # --sample 4 with the default seed: the same draw as read_sample makes
    from mt.generate.moe_stats import read_sample

    sample, bad = read_sample(str(text), 4, 1)
    assert bad == 1 and len(sample) == 4 and set(sample) <= set(kept)
    src_tokens = sum(len(ids) + 2 for ids in tr.encode(sample))
    for tag in ("enc0", "enc1"):  # encoder: 2 assignments per source token, once per direction
        s = stats["layers"][tag]
        assert sum(s["assignments"]) == 2 * 2 * src_tokens and sum(s["first"]) == 2 * src_tokens
        co = torch.tensor(s["coactivation"])
        assert torch.equal(co, co.t()) and co.diagonal().tolist() == s["assignments"]
        assert int(co.sum() - co.trace()) == 2 * 2 * src_tokens  # each token's pair, counted both ways
    assert {"dec0", "dec1"} <= set(stats["layers"])
    pl = json.loads((out.parent / "placement.json").read_text())
    for tag, ranks in pl["layers"].items():
        assert sorted(e for r in ranks for e in r) == list(range(E))
        r = pl["imbalance"][tag]
        assert r["placement"] <= min(r["contiguous"], r["round_robin"]) + 1e-9
    err = capsys.readouterr().err
    assert "max/mean expert work per rank" in err and "skipped 1 empty" in err


def test_mt_generate_moe_flags(moe_model, tmp_path, capsys):
    ck, data = moe_model
    hyps = {}
    for name, extra in {
        "plain": [],
        "static": ["--moe-inference-gating", "static"],
        "cache": ["--expert-cache", "2"],
    }.items():
        res = tmp_path / name
        generate_main(
            [
                str(data),
                "--path",
                str(ck),
                "--gen-subset",
                "dev",
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--results-path",
                str(res),
                "--no-progress-bar",
                "--max-len-b",
                "5",
                *extra,
            ]
        )
        hyps[name] = (res / "eng_Latn-deu_Latn.hyp").read_text()
        err = capsys.readouterr().err
        assert f"MoE {'static' if name == 'static' else 'dynamic'} gating" in err
        if name == "cache":
            assert "expert cache 2 of 8 per layer (mmap): hit rate" in err
    assert hyps["plain"] == hyps["static"] == hyps["cache"]
    with pytest.raises(SystemExit):
        generate_main([str(data), "--path", str(ck), "-s", "eng_Latn", "-t", "deu_Latn", "--expert-cache", "-1"])
    assert "--expert-cache must be >= 0" in capsys.readouterr().err


# --- expert-parallel inference --------------------------------------------------------------------
@pytest.mark.slow
def test_two_rank_expert_parallel_generate_with_a_placement_matches_one_process(moe_model, tmp_path):
    ck, data = moe_model
    placement = {
        "format": "nllb-mini/moe-placement",
        "version": 1,
        "num_experts": E,
        "num_ranks": 2,
        "layers": {
            "enc0": [[7, 1, 4, 2], [0, 3, 5, 6]],
            "enc1": [[0, 2, 4, 6], [1, 3, 5, 7]],
            "dec0": [[6, 5, 4, 3], [2, 1, 0, 7]],
            "dec1": [[1, 3, 5, 7], [0, 2, 4, 6]],
        },
    }
    pl = tmp_path / "placement.json"
    pl.write_text(json.dumps(placement))
    one, two = tmp_path / "one", tmp_path / "two"
    generate_main(
        [
            str(data),
            "--path",
            str(ck),
            "--gen-subset",
            "dev",
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--results-path",
            str(one),
            "--no-progress-bar",
            "--quiet",
        ]
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    script = Path(sys.executable).parent / "mt-generate"  # the console script of this environment
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
        str(script),
        str(data),
        "--path",
        str(ck),
        "--gen-subset",
        "dev",
        "-s",
        "eng_Latn",
        "-t",
        "deu_Latn",
        "--results-path",
        str(two),
        "--no-progress-bar",
        "--quiet",
        "--expert-placement",
        str(pl),
    ]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (two / "eng_Latn-deu_Latn.hyp").read_text() == (one / "eng_Latn-deu_Latn.hyp").read_text()
    assert "expert-parallel rank 0/2 (4 experts per layer here)" in res.stderr
    assert "expert-parallel rank 1/2" in res.stderr
