"""Sparse MoE layers: routing and capacity, sparse dispatch, EOM/FOM, CMR, balance loss, expert-parallel
helpers that need no process group, MoE checkpoints in one process."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from train_fixtures import one_thread  # noqa: F401 (autouse)

from mt.common.errors import UserError
from mt.formats import checkpoint as ckpt
from mt.models import gemm_shapes
from mt.models.config import ForwardContext, arch_config
from mt.models.moe import CMRLayer, MoELayer, capacity_for, num_moe_layers, top2_route
from mt.models.moe import dispatch as moe_mod
from mt.models.moe.collectives import _expert_major
from mt.models.transformer import DecoderCache, Transformer


def _cfg(**kw):
    base = dict(
        vocab_size=40,
        dropout=0.0,
        moe_freq=1,
        moe_expert_count=4,
        moe_second_expert_policy="all",
        langs=["aaa_Latn", "bbb_Latn", "ccc_Latn"],
    )
    base.update(kw)
    return arch_config("transformer_tiny", **base).validate()


def _layer(seed=0, cls=MoELayer, **kw):
    torch.manual_seed(seed)
    return cls(_cfg(**kw), 0, False)


def _reference_moe(layer: MoELayer, x: torch.Tensor, capacity: int) -> torch.Tensor:
    """Token by token: sum over the kept (token, expert) assignments of weight * expert(x)."""
    logits = x @ layer.wg.weight.t()
    r = top2_route(logits, capacity, "all")
    out = torch.zeros_like(x)
    ex = layer.experts
    for t, e, w in zip(r.token.tolist(), r.expert.tolist(), r.weight.tolist()):
        h = F.relu(x[t] @ ex.fc1_weight[e].t() + ex.fc1_bias[e])
        out[t] += w * (h @ ex.fc2_weight[e].t() + ex.fc2_bias[e])
    return out


def test_top2_routing_and_capacity_on_hand_made_logits():
    # first / second choices:  t0 e0,e1  t1 e0,e2  t2 e0,e1  t3 e1,e2  t4 e2,e0  t5 e1,e0
    logits = torch.tensor([[5, 3, 0], [4, 0, 2], [3, 2, 0], [0, 5, 1], [1, 0, 6], [2, 6, 0]], dtype=torch.float)
    r = top2_route(logits, capacity=3, second_expert_policy="all")
    # expert 0 takes its first choices t0 t1 t2, then the second choices t4, t5 are over capacity;
    # expert 1: t3 t5 (first), t0 (second), t2 over capacity; expert 2: t4, then t1 t3
    assert r.routed.tolist() == [5, 4, 3]
    assert int(r.dropped) == 3
    assert r.expert.tolist() == sorted(r.expert.tolist())
    kept = set(zip(r.token.tolist(), r.expert.tolist()))
    assert kept == {(0, 0), (1, 0), (2, 0), (3, 1), (5, 1), (0, 1), (4, 2), (1, 2), (3, 2)}
    p = logits.softmax(-1)
    w = {(t, e): float(v) for t, e, v in zip(r.token.tolist(), r.expert.tolist(), r.weight.tolist())}
    assert w[(0, 0)] == pytest.approx(float(p[0, 0] / (p[0, 0] + p[0, 1])))
    for t, e in ((2, 0), (4, 2), (5, 1)):  # the other expert was dropped: renormalised to 1
        assert w[(t, e)] == pytest.approx(1.0)
    # normalising before dropping keeps the two-expert weights
    r2 = top2_route(logits, capacity=3, second_expert_policy="all", normalize_before_dropping=True)
    w2 = {(t, e): float(v) for t, e, v in zip(r2.token.tolist(), r2.expert.tolist(), r2.weight.tolist())}
    assert w2[(2, 0)] == pytest.approx(float(p[2, 0] / (p[2, 0] + p[2, 1])))
    # enough capacity: nothing dropped, every token keeps both experts
    r3 = top2_route(logits, capacity=6, second_expert_policy="all")
    assert int(r3.dropped) == 0 and len(r3.token) == 12


def test_capacity_formula_and_second_expert_policies():
    assert capacity_for(6, 3, True, 1.0, 1.0) == 4  # ceil(1.0 * 2 * 6 / 3)
    assert capacity_for(10, 4, True, 1.25, 1.0) == 7  # ceil(6.25)
    assert capacity_for(10, 4, False, 1.25, 0.25) == 3  # ceil(0.25 * 10) at eval
    assert capacity_for(10, 4, False, 1.25, -1) == 7  # <= 0: as in training
    torch.manual_seed(0)
    logits = torch.randn(2000, 8)
    a = top2_route(logits, 10**6, "all", training=True)
    s = top2_route(logits, 10**6, "sampling", training=True)
    rnd = top2_route(logits, 10**6, "random", training=True)
    assert len(a.token) == len(s.token) == 4000
    assert 2000 < len(rnd.token) < 4000  # some second experts were not kept

    # sampling: the second expert is not always the second-largest logit, but never the first
    def second(r):
        return {t: e for t, e in zip(r.token.tolist(), r.expert.tolist()) if e != int(r.top1[t])}

    sa, ss = second(a), second(s)
    assert all(e != int(a.top1[t]) for t, e in ss.items())
    assert 0.05 < sum(sa[t] != ss[t] for t in sa) / len(sa) < 0.95
    # at eval every policy is deterministic top-2
    assert torch.equal(top2_route(logits, 10**6, "sampling").expert, a.expert)


def test_capacity_rules_on_a_padded_batch_and_what_the_fairseq_rule_drops():
    # 2 sentences x 5 positions, the second has 3 padding positions: N = 7 routed tokens, S = 10 positions
    N, S, E = 7, 10, 4
    assert capacity_for(N, E, True, 1.0, 1.0) == 4  # nonpad: ceil(2 * 7 / 4) = ceil(3.5)
    assert capacity_for(N, E, True, 1.0, 1.0, "fairseq", S) == 6  # fairseq: 2 * ceil(10 / 4) = 2 * 3
    assert capacity_for(N, E, True, 1.25, 1.0, "nonpad", S) == 5  # ceil(1.25 * 14 / 4) = ceil(4.375)
    assert capacity_for(N, E, True, 1.25, 1.0, "fairseq", S) == 8  # ceil(1.25 * 2 * 3) = ceil(7.5)
    assert capacity_for(N, E, False, 1.0, 0.25, "fairseq", S) == 2  # eval fraction: ceil(0.25 * 7), unchanged
    x = torch.zeros(2, 5, 64)
    x[..., 0] = 1.0
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 2:] = True
    for rule, capacity in (("fairseq", 6), ("nonpad", 4)):
        layer = _layer(moe_train_capacity_rule=rule).train()
        with torch.no_grad():  # every token: first choice expert 0, second choice expert 1
            layer.wg.weight.zero_()
            layer.wg.weight[0, 0], layer.wg.weight[1, 0] = 3.0, 2.0
        ctx = ForwardContext(src_pad_mask=pad)
        out = layer(x, ctx).detach()
        # as fairseq's top2gating: padding takes no slot; tokens fill expert 0 (first choices) and expert 1
        # (second choices) in batch-major order up to the capacity; the rest of the 7 are dropped from both
        dropped, total = ctx.stats["moe/enc0/dropped"]
        assert (float(dropped), float(total)) == (2 * (N - capacity), 2 * N)
        tokens = [(b, t) for b in range(2) for t in range(5) if not pad[b, t]]
        lost = [bt for bt in tokens if float(out[bt].abs().sum()) == 0]
        assert lost == tokens[capacity:]  # fairseq: the last token; nonpad: the last three
    with pytest.raises(UserError, match="--moe-train-capacity-rule must be nonpad or fairseq"):
        _cfg(moe_train_capacity_rule="padded")


def _count_expert_calls(monkeypatch) -> list[tuple[int, int]]:
    """Record (expert, rows) of every expert computation."""
    calls = []
    orig = moe_mod._ffn_one
    monkeypatch.setattr(moe_mod, "_ffn_one", lambda e, x, *a: calls.append((e, x.size(0))) or orig(e, x, *a))
    return calls


def test_moe_layer_output_matches_token_by_token_reference_and_only_used_experts_run(monkeypatch):
    layer = _layer(moe_train_capacity_factor=0.75).train()
    x = torch.randn(2, 9, 64)
    ref = _reference_moe(layer, x.view(-1, 64), capacity_for(18, 4, True, 0.75, 1.0)).view(2, 9, 64)
    torch.testing.assert_close(layer(x, ForwardContext()), ref, rtol=1e-5, atol=1e-5)

    # a gate that sends every token to experts 1 and 3: experts 0 and 2 never run
    with torch.no_grad():
        layer.wg.weight.zero_()
        layer.wg.weight[1, 0], layer.wg.weight[3, 1] = 5.0, 4.0
    calls = _count_expert_calls(monkeypatch)
    x = torch.randn(3, 5, 64)
    x[..., 0], x[..., 1] = 1.0, 1.0
    layer.train()(x, ForwardContext())
    assert sorted(e for e, _ in calls) == [1, 3]  # one call per expert that received tokens
    assert sum(n for _, n in calls) <= 30
    # no rows at all: the (empty) result stays in the graph, so that under expert parallelism every rank
    # runs the backward of the all-to-all that brought the rows
    rows = torch.randn(0, 64, requires_grad=True)
    assert layer.experts(rows, [0, 0, 0, 0]).requires_grad


def test_bf16_experts_run_on_row_segments_padded_for_kernel_reuse(monkeypatch):
    """In CPU bf16 every expert GEMM sees a row count that is a multiple of ROW_MULTIPLE (oneDNN compiles a
    kernel per shape); the zero pad rows change neither the outputs nor any gradient."""
    torch.manual_seed(3)
    E, d, f = 4, 32, 48
    w1, w2 = torch.randn(E, f, d) * 0.2, torch.randn(E, d, f) * 0.2
    b1, b2 = torch.randn(E, f) * 0.1, torch.randn(E, d) * 0.1
    counts = [70, 0, 5, 130]
    x0 = torch.randn(sum(counts), d).bfloat16()
    gy = torch.randn(sum(counts), d).bfloat16()

    def run(multiple):
        monkeypatch.setattr(gemm_shapes, "ROW_MULTIPLE", multiple)
        params = [t.clone().requires_grad_() for t in (w1, b1, w2, b2)]
        x = x0.clone().requires_grad_()
        y = moe_mod._GroupedFFN.apply(x, counts, 0.0, *params)
        y.backward(gy)
        return y.float(), x.grad.float(), [p.grad for p in params]

    calls = _count_expert_calls(monkeypatch)
    y, gx, grads = run(64)
    assert [n for _, n in calls] == [128, 64, 192]  # 70, 5, 130 rounded up; the empty expert does not run
    calls.clear()
    y_ref, gx_ref, grads_ref = run(1)
    assert [n for _, n in calls] == [70, 5, 130]
    torch.testing.assert_close(y, y_ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-2, atol=1e-2)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=2e-2, atol=2e-2)
    assert torch.all(grads[0][1] == 0) and torch.all(grads[1][1] == 0)  # expert 1 had no rows


def test_padding_is_not_routed_and_not_counted():
    layer = _layer().train()
    x = torch.randn(2, 6, 64)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 2:] = True
    ctx = ForwardContext(src_pad_mask=pad)
    out = layer(x, ctx)
    assert torch.all(out[1, 2:] == 0)
    tot, cnt = ctx.stats["moe/enc0/load"]
    assert float(cnt) == 2 * 8 and float(tot.sum()) == 16  # 8 real tokens, two assignments each
    # the real tokens get what they get without the padded ones
    alone = _layer().train()(x[1:, :2], ForwardContext())
    torch.testing.assert_close(out[1, :2], alone[0], rtol=1e-5, atol=1e-5)


def test_dispatch_experts_and_combine_gradients_match_finite_differences():
    torch.manual_seed(0)
    dd = dict(dtype=torch.float64)
    E, d, f = 3, 5, 7
    w1, w2 = torch.randn(E, f, d, **dd, requires_grad=True), torch.randn(E, d, f, **dd, requires_grad=True)
    b1, b2 = torch.randn(E, f, **dd, requires_grad=True), torch.randn(E, d, **dd, requires_grad=True)
    x = torch.randn(9, d, **dd, requires_grad=True)
    counts = [4, 0, 5]  # expert 1 gets nothing
    torch.autograd.gradcheck(lambda *a: moe_mod._GroupedFFN.apply(a[0], counts, 0.0, *a[1:]), (x, w1, b1, w2, b2))
    # 6 tokens, assignments sorted by expert, tokens 0 and 4 twice, token 5 not at all
    token = torch.tensor([0, 2, 4, 1, 0, 3, 4])
    slots = moe_mod._slots(token, 6)
    assert slots.tolist() == [[0, 4], [3, 7], [1, 7], [5, 7], [2, 6], [7, 7]]
    xt = torch.randn(6, d, **dd, requires_grad=True)
    torch.autograd.gradcheck(lambda a: moe_mod._Dispatch.apply(a, token, slots), (xt,))
    ys, w = torch.randn(7, d, **dd, requires_grad=True), torch.rand(7, **dd, requires_grad=True)
    torch.autograd.gradcheck(lambda a, b: moe_mod._Combine.apply(a, b, token, slots), (ys, w))
    out = moe_mod._Combine.apply(ys, w, token, slots)
    torch.testing.assert_close(out[0], w[0] * ys[0] + w[4] * ys[4])
    assert torch.all(out[5] == 0)


def test_eom_and_fom_mask_the_requested_fraction_in_training_only(monkeypatch):
    N = 6000
    x = torch.randn(1, N, 64)
    for kind, p in (("eom", 0.3), ("fom", 0.25)):
        kw = {f"moe_{kind}": p, "moe_train_capacity_factor": 4.0}
        layer, plain = _layer(**kw), _layer(moe_train_capacity_factor=4.0)
        calls = _count_expert_calls(monkeypatch)
        torch.manual_seed(1)
        out = layer.train()(x, ForwardContext())[0]
        rows = [n for _, n in calls]
        ref = plain.train()(x, ForwardContext())[0]
        zero_tokens = float((out.abs().sum(-1) == 0).float().mean())
        dispatched = sum(rows) / (2 * N)
        if kind == "eom":  # each (token, expert) output dropped with p; a whole token with p^2
            assert dispatched == pytest.approx(1 - p, abs=0.02)
            assert zero_tokens == pytest.approx(p * p, abs=0.02)
        else:  # whole tokens dropped with p; the others untouched
            assert zero_tokens == pytest.approx(p, abs=0.02)
            kept = out.abs().sum(-1) > 0
            torch.testing.assert_close(out[kept], ref[kept], rtol=1e-5, atol=1e-5)
        # eval: nothing masked, output scaled by (1 - p)
        ev, ev_ref = layer.eval()(x, ForwardContext())[0], plain.eval()(x, ForwardContext())[0]
        assert float((ev.abs().sum(-1) == 0).float().mean()) == 0
        torch.testing.assert_close(ev, (1 - p) * ev_ref, rtol=1e-5, atol=1e-5)


def test_cmr_blend_equals_formula_gate_dropout_and_language_stats():
    layer = _layer(cls=CMRLayer, moe_cmr=True).eval()
    x = torch.randn(3, 4, 64)
    ctx = ForwardContext()
    g = torch.sigmoid(x @ layer.gate.weight.t() + layer.gate.bias)  # (3, 4, 1)
    dense = layer.dense(x, ctx)
    moe = layer.moe(x, ctx)
    torch.testing.assert_close(layer(x, ctx), (1 - g) * dense + g * moe, rtol=1e-5, atol=1e-5)

    # gate dropout in training: a dropped gate means the dense branch only
    layer = _layer(cls=CMRLayer, moe_cmr=True, cmr_gate_drop=0.4).train()
    x = torch.randn(4, 500, 64)
    src = torch.tensor([0, 1, 0, 2])
    ctx = ForwardContext(src_lang=src, tgt_lang=torch.tensor([1, 0, 1, 0]))
    out = layer(x, ctx)
    dense = layer.dense(x, ctx)
    dense_only = (out - dense).abs().amax(-1) < 1e-6
    assert float(dense_only.float().mean()) == pytest.approx(0.4, abs=0.03)
    # per-language gate means (before dropout), as logged
    g = torch.sigmoid(x @ layer.gate.weight.t() + layer.gate.bias).squeeze(-1).detach()
    tot, cnt = ctx.stats["cmr/enc0/gate@src_lang"]
    mean = (tot / cnt).tolist()
    assert mean[0] == pytest.approx(float(g[[0, 2]].mean()), rel=1e-5)
    assert mean[2] == pytest.approx(float(g[3].mean()), rel=1e-5)
    assert cnt.tolist() == [1000, 500, 500]


def test_cmr_budget_loss_pools_the_gates_of_all_cmr_layers_as_fairseq():
    """fairseq's cmr_gate_loss: |sum of gates / non-padding tokens - p| over all CMR layers of the forward,
    with the gates after gate dropout (kept gates scaled by 1 / (1 - drop), dropped ones 0)."""
    torch.manual_seed(0)
    cfg = _cfg(moe_cmr=True, cmr_gate_loss_p=0.8, cmr_gate_drop=0.25)
    enc, dec = CMRLayer(cfg, 0, False).train(), CMRLayer(cfg, 0, True).train()
    xe, xd = torch.randn(3, 40, 64), torch.randn(3, 30, 64)
    src_pad = torch.zeros(3, 40, dtype=torch.bool)
    src_pad[1, 25:] = True
    ctx = ForwardContext(src_pad_mask=src_pad)
    used, tokens = 0.0, 0
    for layer, x, pad in ((enc, xe, src_pad), (dec, xd, None)):
        out = layer(x, ctx)
        g = torch.sigmoid(x @ layer.gate.weight.t() + layer.gate.bias).squeeze(-1).detach()
        real = ~pad if pad is not None else torch.ones_like(g, dtype=torch.bool)
        kept = (out - layer.dense(x, ctx)).abs().amax(-1) > 1e-6  # a dropped gate leaves the dense branch only
        used += float((g * kept * real).sum()) / (1 - 0.25)
        tokens += int(real.sum())
    assert tokens == 3 * 40 - 15 + 3 * 30
    loss = ctx.aux_losses["cmr_gate_loss"]
    assert float(loss.detach()) == pytest.approx(abs(used / tokens - 0.8), rel=1e-4)
    # below the target: descending the loss raises the gate biases
    loss.backward()
    assert float(enc.gate.bias.grad) < 0 and float(dec.gate.bias.grad) < 0
    # eval adds no loss
    ctx = ForwardContext()
    enc.eval()(xe, ctx)
    assert "cmr_gate_loss" not in ctx.aux_losses
    with pytest.raises(UserError, match="--cmr-gate-loss-p"):
        _cfg(moe_cmr=True, cmr_gate_loss_p=1.5)
    with pytest.raises(UserError, match="--cmr-gate-loss-p needs --moe-cmr"):
        _cfg(cmr_gate_loss_p=0.8)
    from mt.train.cli import build_parser, config_from_args

    argv = ["data", "--lang-pairs", "eng_Latn-deu_Latn", "--moe-freq", "2", "--moe-expert-count", "4"]
    with pytest.raises(UserError, match="--cmr-gate-loss-wt needs --moe-cmr"):
        config_from_args(build_parser().parse_args([*argv, "--cmr-gate-loss-wt", "0.1"]))
    cfg = config_from_args(
        build_parser().parse_args([*argv, "--moe-cmr", "--cmr-gate-loss-wt", "0.1", "--cmr-gate-loss-p", "0.8"])
    )
    assert cfg.cmr_gate_loss_wt == 0.1 and cfg.model_overrides["cmr_gate_loss_p"] == 0.8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from train_fixtures import make_corpus

    root = tmp_path_factory.mktemp("cmr")
    return make_corpus(root, (("eng_Latn", "deu_Latn"),), sizes={"deu_Latn-eng_Latn": 64}, n_valid=4, max_len=8)


def test_cmr_budget_loss_in_mt_train_moves_the_mean_gate_to_p(corpus, tmp_path):
    """30 updates of a tiny CMR model: without the loss the mean gate stays near its initial 0.5; with NLLB's
    --cmr-gate-loss-wt 0.1 --cmr-gate-loss-p 0.8 it climbs toward 0.8 (measured over the last 3 updates: 0.44
    without, 0.72 with; both start at 0.47)."""
    from mt.formats.trainlog import TrainLog
    from mt.train.cli import train_main as main

    def run(name: str, *extra: str) -> list[dict]:
        save = tmp_path / name
        assert (
            main(
                [
                    str(corpus),
                    "--lang-pairs",
                    "eng_Latn-deu_Latn,deu_Latn-eng_Latn",
                    "--arch",
                    "transformer_tiny",
                    "--save-dir",
                    str(save),
                    "--max-tokens",
                    "256",
                    "--lr",
                    "3e-3",
                    "--warmup-updates",
                    "1",
                    "--log-interval",
                    "1",
                    "--no-progress-bar",
                    "--seed",
                    "3",
                    "--moe-freq",
                    "1",
                    "--moe-expert-count",
                    "2",
                    "--moe-cmr",
                    "--max-update",
                    "30",
                    "--no-epoch-checkpoints",
                    *extra,
                ]
            )
            == 0
        )
        return [r for r in TrainLog(save / "train_log.jsonl").read() if r["type"] == "train"]

    def gate(recs: list[dict]) -> float:  # mean CMR gate of the four CMR layers over the last (up to) 3 updates
        last = recs[-3:]
        return sum(v for r in last for k, v in r["moe"].items() if k.startswith("cmr/") and k.endswith("/gate")) / (
            4 * len(last)
        )

    plain = run("plain")
    budget = run("budget", "--cmr-gate-loss-wt", "0.1", "--cmr-gate-loss-p", "0.8")
    assert gate(plain[:1]) == pytest.approx(gate(budget[:1]), rel=1e-6) and 0.4 < gate(plain[:1]) < 0.6  # same start
    assert abs(gate(plain) - 0.5) < 0.1
    assert gate(budget) > 0.65 and gate(budget) - gate(plain) > 0.2
    # logged like the other aux losses: |pooled gate - p|, with p = 1 (fairseq's default) in the plain run
    assert budget[-1]["aux"]["cmr_gate_loss"] == pytest.approx(0.8 - gate(budget[-1:]), abs=0.03)
    assert plain[-1]["aux"]["cmr_gate_loss"] == pytest.approx(1.0 - gate(plain[-1:]), abs=0.03)
    assert budget[-1]["aux"]["cmr_gate_loss"] < 0.1 < plain[-1]["aux"]["cmr_gate_loss"]


def test_balance_loss_is_one_for_uniform_routing_and_larger_when_skewed():
    E, c = 4, 3.0
    layer = _layer().train()
    with torch.no_grad():
        layer.wg.weight.zero_()
        layer.wg.weight[:, :E] = torch.eye(E) * c
    x = torch.zeros(1, 40, 64)
    x[0, torch.arange(40), torch.arange(40) % E] = 1.0  # token t prefers expert t % E, symmetric
    ctx = ForwardContext()
    layer(x, ctx)

    def balance(ctx):
        return float(ctx.stats["moe/enc0/balance"][0])

    assert balance(ctx) == pytest.approx(1.0, rel=1e-5)
    # the aux loss is the mean over the model's MoE layers (4 here): each layer adds its share
    assert float(ctx.aux_losses["moe_gate_loss"].detach()) == pytest.approx(balance(ctx) / 4, rel=1e-6)
    x = torch.zeros(1, 40, 64)
    x[0, :, 0] = 1.0  # every token prefers expert 0
    ctx = ForwardContext()
    layer(x, ctx)
    p0 = math.exp(c) / (math.exp(c) + E - 1)
    assert balance(ctx) == pytest.approx(E * p0, rel=1e-5)
    assert balance(ctx) > 2.5
    load = ctx.stats["moe/enc0/load"]
    assert (load[0] / load[1]).tolist()[0] == pytest.approx(0.5)  # half of the assignments: first choices


def test_moe_transformer_layers_decoding_and_bf16():
    cfg = _cfg(moe_freq=2, moe_eom=0.2)
    assert num_moe_layers(cfg) == 2
    torch.manual_seed(0)
    m = Transformer(cfg)
    assert [type(layer.ffn).__name__ for layer in m.encoder.layers] == ["FeedForward", "MoELayer"]
    experts = [n for n, p in m.named_parameters() if getattr(p, "expert", False)]
    assert len(experts) == 8 and all(".ffn.experts." in n for n in experts)
    m.eval()
    src = torch.randint(4, 40, (3, 7))
    prev = torch.randint(4, 40, (3, 6))
    enc = m.encode(src)
    full = m.decode(prev, enc)
    cache = DecoderCache()
    steps = torch.cat([m.decode(prev[:, : t + 1], enc, cache=cache) for t in range(6)], 1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)  # MoE layers are per-token
    m.train()
    ctx = ForwardContext()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = m(src, prev, ctx, features_only=True)
    assert torch.isfinite(h.float()).all() and set(ctx.aux_losses) == {"moe_gate_loss", "moe_z_loss"}
    h.float().sum().backward()
    grads = [p.grad for n, p in m.named_parameters() if ".experts." in n]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_expert_major_permutation():
    # rank 0 sent (expert 0: 2 rows, expert 1: 1 row), rank 1 sent (expert 0: 0, expert 1: 3)
    recv = torch.tensor([[2, 1], [0, 3]])
    perm = _expert_major(recv)
    # received order: [r0e0, r0e0, r0e1, r1e1, r1e1, r1e1] -> expert 0 rows first
    assert perm.tolist() == [0, 1, 2, 3, 4, 5]
    recv = torch.tensor([[1, 2], [2, 1]])
    # received: [r0e0, r0e1, r0e1, r1e0, r1e0, r1e1] -> expert-major: 0, 3, 4 | 1, 2, 5
    assert _expert_major(recv).tolist() == [0, 3, 4, 1, 2, 5]


def test_experts_not_divisible_by_world_size_is_a_clear_error():
    layer = _layer(moe_expert_count=4)
    with pytest.raises(UserError, match="--moe-expert-count 4 is not divisible by the world size 3"):
        layer.shard_(0, 3)
    layer.shard_(1, 2)
    assert layer.experts.num_local == 2
    with pytest.raises(UserError, match="--moe-freq 2 needs --moe-expert-count >= 2"):
        _cfg(moe_freq=2, moe_expert_count=1)
    with pytest.raises(UserError, match="need --moe-freq"):
        _cfg(moe_freq=0, moe_eom=0.1)


def _moe_state(world: int, rank: int, E: int = 4, save_id: str = "s1") -> dict:
    """A checkpoint state as mt-train writes it, with rank-local experts (E/world of them)."""
    per = E // world
    full = torch.arange(E * 3, dtype=torch.float).view(E, 3)
    local = full[rank * per : (rank + 1) * per]
    return {
        "format": ckpt.FORMAT,
        "format_version": ckpt.FORMAT_VERSION,
        "model_config": {"moe_expert_count": E},
        "model": {"shared.w": torch.ones(2), "l.ffn.experts.fc1_weight": local.clone()},
        "optimizer": {
            "state": {
                0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(2)},
                1: {"step": torch.tensor(5.0), "exp_avg": local + 100, "exp_avg_sq": local * 2},
            },
            "param_groups": [{"params": [0, 1], "lr": 0.1}],
        },
        "num_updates": 5,
        "moe": {"shards": world, "expert_keys": ["l.ffn.experts.fc1_weight"], "expert_param_ids": [1]},
    }


def test_sharded_checkpoint_commit_protocol_and_resharding(tmp_path, monkeypatch):
    from mt.common import distributed

    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, src=0: "s1")
    path = tmp_path / "checkpoint_last.pt"
    for r in (0, 1):  # what the two ranks do (barriers are no-ops in one process)
        ckpt.save_checkpoint(_moe_state(2, r), path, [tmp_path / "checkpoint_best.pt"], rank=r, world=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint_best-rank-0.pt",
        "checkpoint_best-rank-1.pt",
        "checkpoint_best.pt",
        "checkpoint_last-rank-0.pt",
        "checkpoint_last-rank-1.pt",
        "checkpoint_last.pt",
    ]
    shared = torch.load(path, weights_only=True)
    assert "l.ffn.experts.fc1_weight" not in shared["model"] and 1 not in shared["optimizer"]["state"]
    assert shared["save_id"] == shared["moe"]["save_id"] == "s1" and ckpt.model_id(path) == "save:s1"
    full = _moe_state(1, 0)
    for p in (path, tmp_path / "checkpoint_best.pt"):
        st = ckpt.load_checkpoint(p)  # W=2 -> W=1: all experts, weights and Adam moments
        assert torch.equal(st["model"]["l.ffn.experts.fc1_weight"], full["model"]["l.ffn.experts.fc1_weight"])
        assert torch.equal(st["optimizer"]["state"][1]["exp_avg"], full["optimizer"]["state"][1]["exp_avg"])
        assert float(st["optimizer"]["state"][1]["step"]) == 5.0
    # W=2 -> W=4: each rank gets one expert
    st = ckpt.load_checkpoint(path, rank=3, world=4)
    assert st["model"]["l.ffn.experts.fc1_weight"].tolist() == [[9.0, 10.0, 11.0]]
    # W=1 -> W=2
    one = tmp_path / "one.pt"
    ckpt.save_checkpoint(_moe_state(1, 0), one)
    st = ckpt.load_checkpoint(one, rank=1, world=2)
    assert torch.equal(st["model"]["l.ffn.experts.fc1_weight"], _moe_state(2, 1)["model"]["l.ffn.experts.fc1_weight"])
    assert torch.equal(
        st["optimizer"]["state"][1]["exp_avg_sq"], _moe_state(2, 1)["optimizer"]["state"][1]["exp_avg_sq"]
    )
    with pytest.raises(UserError, match="4 experts per MoE layer, not divisible by the world size 3"):
        ckpt.load_checkpoint(path, rank=0, world=3)

    # a kill after the commit point (shared file written) but before rank 1 renamed its shard: the
    # pending shard of the new save is used
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, src=0: "s2")
    new1 = _moe_state(2, 1)
    new1["model"]["l.ffn.experts.fc1_weight"] += 1000
    ckpt.save_checkpoint(_moe_state(2, 0), path, rank=0, world=2)
    shard1 = {
        "format": ckpt.FORMAT + "/experts",
        "save_id": "s2",
        "rank": 1,
        "shards": 2,
        "model": {"l.ffn.experts.fc1_weight": new1["model"]["l.ffn.experts.fc1_weight"]},
        "optimizer_state": {1: new1["optimizer"]["state"][1]},
    }
    torch.save(shard1, tmp_path / "checkpoint_last-rank-1.pt.pending")
    st = ckpt.load_checkpoint(path)
    assert float(st["model"]["l.ffn.experts.fc1_weight"][2, 0]) == 1006.0
    # ... and without it the checkpoint is reported incomplete (the old shard is from another save)
    (tmp_path / "checkpoint_last-rank-1.pt.pending").unlink()
    with pytest.raises(UserError, match="expert shard 1 .* missing or belongs to another save"):
        ckpt.load_checkpoint(path)
    # pruning an epoch checkpoint removes its expert shards too
    for r in (0, 1):
        ckpt.save_checkpoint(_moe_state(2, r), tmp_path / "checkpoint1.pt", rank=r, world=2)
        ckpt.save_checkpoint(_moe_state(2, r), tmp_path / "checkpoint2.pt", rank=r, world=2)
    ckpt.prune_epoch_checkpoints(tmp_path, 1)
    assert not list(tmp_path.glob("checkpoint1*")) and len(list(tmp_path.glob("checkpoint2*"))) == 3
