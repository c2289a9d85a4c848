"""The Transformer: incremental decoding, padding, masked logits, the FFN/adapter seams, criterion, LR."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from train_fixtures import one_thread  # noqa: F401 (autouse)

from mt.common.errors import UserError
from mt.generate.greedy import greedy_decode
from mt.models import ffn as ffn_module
from mt.models.config import ForwardContext, TransformerConfig, arch_config
from mt.models.transformer import DecoderCache, Transformer, sinusoidal_table
from mt.train.criterion import LabelSmoothedCrossEntropy
from mt.train.optim import InverseSqrtSchedule

V, PAD, EOS = 40, 1, 2


def _model(seed=0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = arch_config("transformer_tiny", vocab_size=V, dropout=0.0, **kw)
    return Transformer(cfg).eval()


def _src(B=3, S=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (B, S), generator=g)
    src[1, 4:] = PAD  # right padding on one row
    src[2, 6:] = PAD
    return src


def test_cached_decoding_equals_uncached():
    m = _model()
    src = _src()
    enc = m.encode(src)
    prev = torch.randint(4, V, (3, 9), generator=torch.Generator().manual_seed(2))
    full = m.decode(prev, enc)
    cache = DecoderCache()
    steps = [m.decode(prev[:, : t + 1], enc, cache=cache) for t in range(prev.size(1))]
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    # several new positions at once after a non-empty cache (bottom-right causal mask)
    cache = DecoderCache()
    a = m.decode(prev[:, :4], enc, cache=cache)
    b = m.decode(prev, enc, cache=cache)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-5, atol=1e-5)


def test_cache_reorder_for_beam_search():
    m = _model()
    src = _src()
    prev = torch.randint(4, V, (3, 5), generator=torch.Generator().manual_seed(3))
    enc = m.encode(src)
    cache = DecoderCache()
    m.decode(prev[:, :3], enc, cache=cache)
    order = torch.tensor([2, 2, 0])
    cache.reorder(order)
    got = m.decode(prev[order], enc.reorder(order), cache=cache)
    want = m.decode(prev[order], m.encode(src[order]))[:, 3:]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_greedy_with_cache_matches_without():
    m = _model(seed=4)
    src = _src()
    tgt_lang = torch.full((3,), 5)
    a = greedy_decode(m, src, tgt_lang, EOS, max_len_b=6, use_cache=True)
    b = greedy_decode(m, src, tgt_lang, EOS, max_len_b=6, use_cache=False)
    assert a == b and all(len(h) <= 6 + 7 * 1.2 for h in a)


def test_right_padding_does_not_change_a_sentence():
    m = _model()
    src = torch.randint(4, V, (1, 5), generator=torch.Generator().manual_seed(5))
    prev = torch.randint(4, V, (1, 4), generator=torch.Generator().manual_seed(6))
    alone = m(src, prev)
    src_p = torch.cat([src, torch.full((1, 3), PAD)], 1)
    prev_p = torch.cat([prev, torch.full((1, 2), PAD)], 1)
    other = torch.randint(4, V, (1, 8))
    batch = m(torch.cat([src_p, other]), torch.cat([prev_p, torch.randint(4, V, (1, 6))]))
    torch.testing.assert_close(batch[0, :4], alone[0], rtol=1e-5, atol=1e-5)


def test_target_mask_projects_only_needed_positions():
    m = _model()
    src = _src()
    prev = torch.randint(4, V, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = False
    full = m(src, prev)
    part = m(src, prev, target_mask=mask)
    assert part.shape == (int(mask.sum()), V)
    torch.testing.assert_close(part, full[mask], rtol=1e-5, atol=1e-5)


def test_sinusoidal_positions_follow_fairseq():
    t = sinusoidal_table(10, 8, padding_idx=1)
    assert torch.all(t[1] == 0)
    half = 4
    for pos in (2, 7):
        for i in range(half):
            freq = math.exp(-i * math.log(10000) / (half - 1))
            assert t[pos, i].item() == pytest.approx(math.sin(pos * freq), abs=1e-6)
            assert t[pos, half + i].item() == pytest.approx(math.cos(pos * freq), abs=1e-6)


def test_shared_embeddings_and_presets():
    m = _model()
    assert not any("output" in n for n, _ in m.named_parameters())
    names = dict(m.named_parameters())
    assert "encoder.layers.0.self_attn.qkv_proj.weight" in names
    big = arch_config("nllb_dense_600m", vocab_size=256_000)
    assert (big.encoder_layers, big.decoder_layers, big.encoder_embed_dim, big.encoder_ffn_embed_dim) == (
        12,
        12,
        1024,
        4096,
    )
    assert big.encoder_attention_heads == 16
    with pytest.raises(UserError, match="differ"):
        Transformer(arch_config("transformer_tiny", vocab_size=V, decoder_embed_dim=32))
    with pytest.raises(UserError, match="unknown --arch"):
        arch_config("nope")


def test_ffn_factory_seam_carries_aux_losses(monkeypatch):
    """A replacement FFN (what MoE does) sees the context and its aux loss reaches the criterion."""
    seen = []

    class CountingFFN(ffn_module.FeedForward):
        def __init__(self, cfg, layer_idx, is_decoder):
            d = cfg.decoder_embed_dim if is_decoder else cfg.encoder_embed_dim
            super().__init__(d, 16, 0.0)
            self.layer_idx, self.is_decoder = layer_idx, is_decoder

        def forward(self, x, ctx):
            seen.append(
                (
                    self.is_decoder,
                    self.layer_idx,
                    ctx.lang(self.is_decoder).tolist(),
                    ctx.padding_mask(self.is_decoder).shape,
                )
            )
            ctx.add_aux_loss("balance", x.float().pow(2).mean())
            return super().forward(x, ctx)

    import mt.models.transformer as tr

    monkeypatch.setattr(tr, "build_ffn", lambda cfg, layer_idx, is_decoder: CountingFFN(cfg, layer_idx, is_decoder))
    torch.manual_seed(0)
    m = Transformer(arch_config("transformer_tiny", vocab_size=V, dropout=0.0))
    src, prev = _src(), torch.randint(4, V, (3, 4))
    ctx = ForwardContext(src_lang=torch.tensor([0, 1, 0]), tgt_lang=torch.tensor([1, 0, 1]))
    logits = m(src, prev, ctx)
    assert [(d, i) for d, i, _, _ in seen] == [(False, 0), (False, 1), (True, 0), (True, 1)]
    assert seen[0][2] == [0, 1, 0] and seen[2][2] == [1, 0, 1]
    assert seen[0][3] == src.shape and seen[2][3] == prev.shape
    crit = LabelSmoothedCrossEntropy(0.0, {"balance": 0.5})
    out = crit.from_logits(logits.view(-1, V), torch.randint(0, V, (12,)), ctx.aux_losses)
    assert set(out.aux) == {"balance"}
    assert float(out.aux_total.detach()) == pytest.approx(0.5 * float(out.aux["balance"]))
    (out.loss + out.aux_total).backward()
    assert m.encoder.layers[0].ffn.fc1.weight.grad is not None


def test_label_smoothed_loss_matches_pytorch_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(11, V, generator=g)
    target = torch.randint(0, V, (11,), generator=g)
    out = LabelSmoothedCrossEntropy(0.1).from_logits(logits, target)
    ref = F.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum")
    assert float(out.loss) == pytest.approx(float(ref), rel=1e-5)
    assert float(out.nll_loss) == pytest.approx(float(F.cross_entropy(logits, target, reduction="sum")), rel=1e-5)
    assert out.ntokens == 11


def test_inverse_sqrt_schedule():
    s = InverseSqrtSchedule(lr=1e-3, warmup_updates=100, warmup_init_lr=1e-7)
    assert s(0) == pytest.approx(1e-7)
    assert s(1) == pytest.approx(1e-7 + (1e-3 - 1e-7) / 100)
    assert s(50) == pytest.approx(1e-7 + (1e-3 - 1e-7) * 0.5)
    assert s(100) == pytest.approx(1e-3)
    assert s(400) == pytest.approx(1e-3 * 0.5)
    assert InverseSqrtSchedule(1e-3, 0)(10) == pytest.approx(1e-3)


def test_config_roundtrip_ignores_unknown_keys():
    cfg = arch_config("transformer_small", vocab_size=100, langs=["eng_Latn"])
    d = cfg.to_dict() | {"added_later": 1}
    assert TransformerConfig.from_dict(d) == cfg


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_cpu_attention_path_matches_sdpa(causal):
    from mt.models.transformer import _bmm_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 8, generator=g) for _ in range(3))
    mask = (
        None if causal else torch.tensor([True] * 5 + [True] * 3 + [False] * 2 + [True] * 4 + [False]).view(3, 1, 1, 5)
    )
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    got = _bmm_attention(q, k, v, mask, causal, 0.0)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    got16 = _bmm_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, causal, 0.0)
    torch.testing.assert_close(got16.float(), ref, rtol=0.05, atol=0.05)


def test_cached_decoding_under_bf16_autocast():
    m = _model()
    src = _src()
    prev = torch.randint(4, V, (3, 5), generator=torch.Generator().manual_seed(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc = m.encode(src)
        full = m.decode(prev, enc)
        cache = DecoderCache()
        inc = torch.cat([m.decode(prev[:, : t + 1], enc, cache=cache) for t in range(5)], 1)
    torch.testing.assert_close(inc.float(), full.float(), rtol=0.05, atol=0.05)
    assert (inc.argmax(-1) == full.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_fused_projection_loss_matches_autograd_reference(bf16, eps):
    """Loss, nll and both gradients of the fused chunked head equal the plain logits -> log_softmax path."""
    from mt.train.criterion import linear_label_smoothed_ce

    g = torch.Generator().manual_seed(1)
    # two chunks of rows (2**22 // V rounded down to a multiple of 64 = 192); in bf16 the 300 rows are
    # zero-padded to 320 (oneDNN shape reuse), so the second chunk is 108 real rows and 20 padding rows
    N, d, vocab = 300, 16, 20000
    h = torch.randn(N, d, generator=g, requires_grad=True)
    w = (0.3 * torch.randn(vocab, d, generator=g)).requires_grad_()
    t = torch.randint(0, vocab, (N,), generator=g)
    crit = LabelSmoothedCrossEntropy(eps)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with amp:
        ref = crit.from_logits(F.linear(h, w), t)
    (2.0 * ref.loss).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    with amp:
        out = crit(h, w, t)
    (2.0 * out.loss).backward()
    tol = dict(rtol=2e-2, atol=2e-2) if bf16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss.detach(), ref.loss.detach(), **tol)
    torch.testing.assert_close(out.nll_loss, ref.nll_loss, **tol)
    torch.testing.assert_close(h.grad, gh, **tol)
    torch.testing.assert_close(w.grad, gw, **tol)
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    with torch.no_grad(), amp:
        loss_ng, nll_ng = linear_label_smoothed_ce(h, w, t, eps)
    torch.testing.assert_close(loss_ng, out.loss.detach(), rtol=1e-6, atol=1e-3)


def test_blocked_linear_equals_the_whole_product_and_blocks_only_wide_float32():
    from mt.models import gemm_shapes

    w = torch.randn(9000, 1024)
    assert gemm_shapes.block_rows(w) == 256  # 256 x 1024 float32 = 1 MiB
    assert gemm_shapes.block_rows(torch.randn(9000, 512)) == 512  # 9 MiB
    assert gemm_shapes.block_rows(torch.randn(4096, 1024)) == 256  # a 600M model's fc1: 16 MiB
    assert gemm_shapes.block_rows(torch.randn(2048, 512)) == 0  # 4 MiB: stays in the L3, whole
    assert gemm_shapes.block_rows(torch.randn(1024, 4096)) == 0  # 1024 rows: whole
    assert gemm_shapes.block_rows(w.bfloat16()) == 0
    x = torch.randn(37, 1024)
    with torch.no_grad():
        got = gemm_shapes.blocked_linear(x, w, 256)  # 9000 = 35 blocks + a 40-row tail
        bias = torch.randn(9000)
        with_bias = gemm_shapes.blocked_linear(x, w, 256, bias=bias)
    torch.testing.assert_close(got, x @ w.t(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(with_bias, F.linear(x, w, bias), rtol=1e-5, atol=1e-4)
    xg = x.clone().requires_grad_()
    gemm_shapes.blocked_linear(xg, w, 256).sum().backward()  # with autograd on it falls back to one product
    torch.testing.assert_close(xg.grad, w.sum(0).expand(37, -1), rtol=1e-5, atol=1e-3)


def test_inference_linear_picks_onednn_or_mkl_and_equals_f_linear(monkeypatch):
    from mt.models import gemm_shapes

    if gemm_shapes.ONEDNN is None:
        pytest.skip("this torch build has no oneDNN linear")
    calls = []
    real = gemm_shapes.ONEDNN

    def spy(*a):
        calls.append(a[1].shape)
        return real(*a)

    monkeypatch.setattr(gemm_shapes, "ONEDNN", spy)
    wide = torch.randn(20000, 512)  # 39 MiB: 8192-row blocks of 16 MiB
    assert gemm_shapes.onednn_block_rows(wide) == 8192
    assert gemm_shapes.onednn_block_rows(torch.randn(4096, 1024)) == 0  # 16 MiB: one block, whole
    bias = torch.randn(20000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            few = torch.randn(8, 512)
            torch.testing.assert_close(gemm_shapes.linear(few, wide, bias), F.linear(few, wide, bias))
            assert calls == []  # 1 thread, 8 rows: MKL (faster there)
            many = torch.randn(gemm_shapes.ONEDNN_MIN_ROWS, 512)
            mid = torch.randn(1536, 512)  # 3 MiB
            torch.testing.assert_close(gemm_shapes.linear(many, mid), F.linear(many, mid), rtol=1e-5, atol=1e-4)
            assert calls == []  # 1 thread, 3 MiB: MKL
            buf = torch.full((many.size(0), 20000), float("nan"))
            got = gemm_shapes.linear(many, wide, bias, out=buf)
            assert got.data_ptr() == buf.data_ptr() and calls == [(8192, 512), (8192, 512), (3616, 512)]
            torch.testing.assert_close(got, F.linear(many, wide, bias), rtol=1e-5, atol=1e-4)
            torch.set_num_threads(2)
            calls.clear()
            small = torch.randn(64, 512)
            torch.testing.assert_close(gemm_shapes.linear(few, small), F.linear(few, small), rtol=1e-5, atol=1e-4)
            assert calls == []  # 128 KiB of weight: MKL
            torch.testing.assert_close(gemm_shapes.linear(few, mid), F.linear(few, mid), rtol=1e-5, atol=1e-4)
            assert calls == [(1536, 512)]  # 2 threads: oneDNN from one row up
            with gemm_shapes.mkl_only():  # the benchmarks' A/B switch
                torch.testing.assert_close(gemm_shapes.linear(few, mid), F.linear(few, mid), rtol=1e-5, atol=1e-4)
            assert len(calls) == 1 and gemm_shapes.ONEDNN is spy
            assert gemm_shapes.linear(few[:0], mid).shape == (0, 1536) and len(calls) == 1  # no rows: F.linear
        calls.clear()
        xg = few.clone().requires_grad_()
        gemm_shapes.linear(xg, mid).sum().backward()  # autograd on: F.linear
        assert calls == [] and xg.grad is not None
        assert gemm_shapes.linear(few.bfloat16(), mid.bfloat16()).dtype == torch.bfloat16 and calls == []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides: F.linear in bf16
            assert gemm_shapes.linear(few, mid).dtype == torch.bfloat16 and calls == []
    finally:
        torch.set_num_threads(threads)


def test_inference_linears_keep_the_parameters_and_the_outputs(monkeypatch):
    from mt.models import gemm_shapes

    monkeypatch.setattr(gemm_shapes, "ONEDNN_MIN_BYTES", 0)
    monkeypatch.setattr(gemm_shapes, "ONEDNN_MIN_BYTES_1THREAD", 0)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 96), torch.nn.ReLU(), torch.nn.Linear(96, 32, bias=False))
    x = torch.randn(3, 40, 32)
    want = net(x)
    params = [p.data_ptr() for p in net.parameters()]
    assert gemm_shapes.inference_linears_(net) == 2 and gemm_shapes.inference_linears_(net) == 0
    assert all(type(m) is gemm_shapes.InferenceLinear for m in (net[0], net[2]))
    assert [p.data_ptr() for p in net.parameters()] == params and list(net.state_dict()) == [
        "0.weight",
        "0.bias",
        "2.weight",
    ]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # 120 rows: oneDNN where the build has it
        with torch.no_grad():
            torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5)
        got = net(x)  # autograd on: nn.Linear's own product, gradients intact
        got.sum().backward()
        torch.testing.assert_close(got, want)
        assert net[0].weight.grad is not None
    finally:
        torch.set_num_threads(threads)
