"""``--quantize int8`` decoding against float32, the refusals, and the bf16 row padding of the MoE decode runner."""

from __future__ import annotations

import random

import pytest
import torch
from decode_fixtures import LANG_PAIRS, PAIRS, make_checkpoint
from train_fixtures import WORDS, make_corpus, one_thread, sentence  # noqa: F401 (one_thread: autouse)

from mt.common.errors import UserError
from mt.generate import cli
from mt.generate.batch_job import TranslateConfig
from mt.generate.cli import build_moe_stats_parser, generate_main
from mt.generate.expert_cache import ExpertCache
from mt.generate.generate import GenerateConfig, corpus_score
from mt.generate.interactive import InteractiveConfig
from mt.generate.quantize import Int8Experts, Int8Linear, check_quantize
from mt.generate.translator import Translator
from mt.models.moe import pad_segments
from mt.train.trainer import TrainConfig, train

WORDLISTS = [random.Random(i).choices(WORDS, k=2 + i % 5) for i in range(40)]
SENTS = [" ".join(ws) for ws in WORDLISTS]
REFS = [sentence("deu_Latn", ws) for ws in WORDLISTS]  # the toy corpus' own translations


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The toy corpus' model after 200 updates (~20 s): chrF++ 54 on its own task, so the comparison is
    between two working decoders, not between two kinds of noise."""
    root = tmp_path_factory.mktemp("int8_trained")
    data = make_corpus(root, PAIRS, sizes={"eng_Latn-deu_Latn": 200, "eng_Latn-fra_Latn": 40}, n_valid=8, max_len=6)
    cfg = TrainConfig(
        data=str(data),
        lang_pairs=LANG_PAIRS,
        arch="transformer_tiny",
        save_dir=str(root / "ck"),
        max_tokens=512,
        lr=3e-3,
        warmup_updates=20,
        max_update=200,
        label_smoothing=0.0,
        model_overrides={"dropout": 0.0},
        no_progress_bar=True,
        no_epoch_checkpoints=True,
    )
    train(cfg)
    return root / "ck" / "checkpoint_last.pt", data


def test_int8_linear_is_close_to_float32_per_row():
    torch.manual_seed(0)
    w = torch.randn(48, 32) * torch.logspace(-2, 0, 48)[:, None]  # rows of very different ranges
    b, x = torch.randn(48), torch.randn(5, 7, 32)
    ref = torch.nn.functional.linear(x, w, b)
    y = Int8Linear(w, b)(x)
    assert y.shape == ref.shape and y.dtype == torch.float32
    # per row: error relative to that row's scale, so small rows are not swamped by large ones
    err = ((y - ref).abs() / (w.abs().amax(1) * x.abs().amax() * 32).clamp_min(1e-6)).amax()
    assert err < 0.02


def test_int8_experts_match_the_float_experts():
    torch.manual_seed(0)
    E, d, f = 4, 16, 40
    w1, b1, w2, b2 = torch.randn(E, f, d) * 0.2, torch.randn(E, f), torch.randn(E, d, f) * 0.2, torch.randn(E, d)
    counts = [3, 0, 5, 2]
    x = torch.randn(sum(counts), d)
    y = Int8Experts([w1, b1, w2, b2])(x, counts)
    ref = ExpertCache.resident([w1, b1, w2, b2], torch.float32)(x, counts)
    torch.testing.assert_close(y, ref, rtol=0.05, atol=0.1)


def test_int8_decoding_agrees_with_float32_on_a_trained_model(trained):
    """int8 vs fp32 on a trained toy model, beam 4 (mt-translate's default).

    Bounds (measured on this model: 202 of 203 argmax positions agree, 37 of 40 identical outputs, corpus
    chrF++ 1.2 points apart):
    - teacher-forced argmax (the next token after fp32's own output) agrees on >= 95% of positions:
      per-row int8 weights with 7-bit activations perturb the logits by ~1% of their range, which flips
      near-ties only (a toy model has a few);
    - >= 80% of the outputs identical, chrF++ of int8 against fp32 as the reference >= 90;
    - corpus chrF++ against the references within 3 points: 40 sentences of 2-6 words, so one changed
      word moves it by ~0.5-1 point; 3 points allow a few changed sentences and still catch a broken
      layer or a wrong scale (either costs tens of points). The issue's 0.3 bound is for the 1012-sentence
      devtest of a real model (a changed word there moves chrF++ by ~0.01), measured by the lead."""
    ck, data = trained
    fp = Translator(ck)
    q = Translator(ck, quantize="int8")
    assert any(isinstance(m, Int8Linear) for m in q.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in q.model.encoder.modules())
    a = fp.translate(SENTS, "eng_Latn", "deu_Latn")
    b = q.translate(SENTS, "eng_Latn", "deu_Latn")
    same = sum(x.ids == y.ids for x, y in zip(a, b))
    assert same >= 0.8 * len(SENTS)
    # teacher-forced argmax agreement through the incremental decoder (what search uses)
    agree = total = 0
    for hyp, src in zip(a, fp.encode(SENTS)):
        agree_i, n_i = _forced_argmax_agreement(fp, q, src, hyp.ids)
        agree, total = agree + agree_i, total + n_i
    assert total > 100 and agree / total >= 0.95
    hyps_fp, hyps_q = [h.text for h in a], [h.text for h in b]
    assert corpus_score(hyps_q, hyps_fp, "chrf", "deu_Latn")[0] >= 90
    d = corpus_score(hyps_q, REFS, "chrf", "deu_Latn")[0] - corpus_score(hyps_fp, REFS, "chrf", "deu_Latn")[0]
    assert corpus_score(hyps_fp, REFS, "chrf", "deu_Latn")[0] > 40  # the model works (54)
    assert abs(d) <= 3.0


def _forced_argmax_agreement(fp: Translator, q: Translator, src: list[int], forced: list[int]) -> tuple[int, int]:
    """Positions where both models' next-token argmax agree, decoding ``forced`` (fp32's output) in both."""
    from mt.generate.incremental import IncrementalDecoder
    from mt.models.config import ForwardContext

    def argmaxes(tr: Translator) -> list[int]:
        model = tr.model
        lang = tr.lang_token("deu_Latn")
        src_t = torch.tensor([[tr.lang_token("eng_Latn"), *src, tr.dictionary.eos()]])
        with torch.no_grad():
            enc = model.encode(src_t, ForwardContext())
            dec = IncrementalDecoder(model, enc, tr.decoder_weights(), len(forced) + 2)
            out, tok = [], lang
            for t in [*forced, tr.dictionary.eos()]:
                out.append(int(dec.step(torch.tensor([tok])).argmax()))
                tok = t
        return out

    x, y = argmaxes(fp), argmaxes(q)
    return sum(i == j for i, j in zip(x, y)), len(x)


def test_int8_moe_decoding_agrees_with_float32(tmp_path):
    ck, _ = make_checkpoint(tmp_path, moe_freq=1, moe_expert_count=4, moe_second_expert_policy="all")
    fp, q = Translator(ck), Translator(ck, quantize="int8")
    assert all(isinstance(m.runner, Int8Experts) for _, m in q.moe.layers)
    s = q.moe.stats()  # int8 experts: a quarter of the float32 bytes, plus a scale and bias per row
    assert s["full_expert_bytes"] / 4 < s["resident_bytes"] < s["full_expert_bytes"] / 3
    srcs = [[5 + (i * 7 + j * 3) % 40 for j in range(2 + i % 7)] for i in range(16)]
    a = [h[0].tokens for h in fp.translate_ids(srcs, "eng_Latn", "deu_Latn")]
    b = [h[0].tokens for h in q.translate_ids(srcs, "eng_Latn", "deu_Latn")]
    agree = sum(i == j for x, y in zip(a, b) for i, j in zip(x, y)) / sum(max(len(x), len(y)) for x, y in zip(a, b))
    assert agree >= 0.75  # a random-weight model has near-ties; a trained one is tested above


def test_refusals(trained, tmp_path, capsys):
    ck, data = trained
    with pytest.raises(UserError, match="--bf16"):
        Translator(ck, bf16=True, quantize="int8")
    with pytest.raises(UserError, match="CPU"):
        check_quantize("int8", "cuda", False)
    with pytest.raises(UserError, match="none or int8"):
        check_quantize("int4", "cpu", False)
    assert check_quantize("none", "cuda", True) is False
    with pytest.raises(SystemExit):
        generate_main([str(data), "--path", str(ck), "-s", "eng_Latn", "-t", "deu_Latn", "--quantize", "int4"])
    argv = [str(data), "--path", str(ck), "-s", "eng_Latn", "-t", "deu_Latn", "--gen-subset", "valid", "--quiet"]
    assert generate_main([*argv, "--quantize", "int8"]) == 0
    with pytest.raises(SystemExit):
        generate_main([*argv, "--quantize", "int8", "--bf16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == "error: --quantize int8 and --bf16 exclude each other: int8 products replace the bf16 ones; pick one"
    )
    for build, cls, extra in (
        (cli.build_translate_parser, TranslateConfig, ["a.txt", "--out", "o"]),
        (cli.build_interactive_parser, InteractiveConfig, []),
        (cli.build_generate_parser, GenerateConfig, ["bin"]),
    ):
        args = build().parse_args([*extra, "-s", "eng_Latn", "-t", "deu_Latn", "--path", "c.pt", "--quantize", "int8"])
        assert cli._decoding(args, cls).quantize == "int8"
    with pytest.raises(SystemExit):  # routing statistics are the float model's: no --quantize there
        build_moe_stats_parser().parse_args(["--path", "x", "--quantize", "int8"])
    moe_ck, _ = make_checkpoint(tmp_path, moe_freq=1, moe_expert_count=4)
    with pytest.raises(UserError, match="--expert-cache"):
        Translator(moe_ck, quantize="int8", expert_cache=1)


# --- bf16 row padding of the MoE decode runner ------------------------------------------------------------
def test_pad_segments_pads_cpu_bf16_rows_to_64_and_nothing_else():
    x = torch.randn(10, 4)
    assert pad_segments(x, [3, 7])[2] is None
    xp, padded, pos = pad_segments(x.bfloat16(), [3, 0, 7])
    assert padded == [64, 0, 64] and xp.shape == (128, 4)
    torch.testing.assert_close(xp.index_select(0, pos), x.bfloat16())
    assert xp[3:64].abs().sum() == 0


def test_bf16_expert_cache_pads_rows_and_gives_the_unpadded_outputs(monkeypatch):
    torch.manual_seed(0)
    E, d, f = 4, 16, 40
    stacked = [torch.randn(E, f, d) * 0.2, torch.randn(E, f), torch.randn(E, d, f) * 0.2, torch.randn(E, d)]
    counts = [3, 0, 70, 5]
    x = torch.randn(sum(counts), d).bfloat16()
    shapes = []
    real_addmm = torch.addmm

    def addmm(b, a, w):
        shapes.append(a.size(0))
        return real_addmm(b, a, w)

    cache = ExpertCache.resident(stacked, torch.bfloat16)
    monkeypatch.setattr(torch, "addmm", addmm)
    y = cache(x, counts)
    assert set(shapes) == {64, 128}  # every GEMM on a multiple of 64 rows
    monkeypatch.setattr("mt.models.gemm_shapes.ROW_MULTIPLE", 1)  # the unpadded loop
    shapes.clear()
    ref = cache(x, counts)
    assert sorted(set(shapes)) == [3, 5, 70]
    torch.testing.assert_close(y, ref, rtol=0, atol=0)  # row-independent GEMMs: padding changes nothing


def test_bf16_moe_translation_is_the_same_padded_and_unpadded(tmp_path, monkeypatch):
    ck, _ = make_checkpoint(tmp_path, moe_freq=1, moe_expert_count=4, moe_second_expert_policy="all")
    tr = Translator(ck, bf16=True)
    srcs = [[5 + (i * 7 + j * 3) % 40 for j in range(2 + i % 7)] for i in range(12)]
    padded = [(h[0].tokens, h[0].score) for h in tr.translate_ids(srcs, "eng_Latn", "deu_Latn")]
    monkeypatch.setattr("mt.models.gemm_shapes.ROW_MULTIPLE", 1)
    plain = [(h[0].tokens, h[0].score) for h in tr.translate_ids(srcs, "eng_Latn", "deu_Latn")]
    assert padded == plain


def test_blocked_int8_output_projection_equals_the_whole_one():
    """Row blocks share the call's activation scale and keep each row's weight scale: the same numbers."""
    from mt.generate.quantize import BlockedInt8Linear, int8_output_projection

    torch.manual_seed(0)
    w, x = torch.randn(1000, 64), torch.randn(9, 64)
    blocked = BlockedInt8Linear(w, rows=300)  # 3 blocks + a 100-row tail
    assert len(blocked.blocks) == 4
    out = torch.full((9, 1000), float("nan"))
    got = blocked(x, out=out)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(got, Int8Linear(w)(x), rtol=0, atol=1e-6)
    assert isinstance(int8_output_projection(w), Int8Linear)  # narrow vocabularies stay one product
    assert isinstance(int8_output_projection(torch.randn(16385, 8)), BlockedInt8Linear)
