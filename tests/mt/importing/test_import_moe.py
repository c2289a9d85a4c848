"""mt-import of the sparse NLLB-MoE: a random NllbMoeForConditionalGeneration shaped like nllb-moe-54b (reduced
sizes: 4 + 4 layers, 8 experts in layers 1 and 3 of each stack) becomes our MoE checkpoint, and

- every dense sublayer and every router computes what transformers' does (layer by layer, on HF's inputs);
- the whole model computes what transformers' does once its routing bug is fixed (``nf.fix_hf_routing``),
  and translates as its ``generate`` does; unfixed, transformers' output differs;
- the fairseq release layout (``-shared.pt`` + ``-rank-N.pt``, one or several local experts per file) imports
  to the same checkpoint and translations;
- experts are written one file per expert and memory-mapped from there at inference (``--expert-cache``);
  the import's peak memory is the dense part plus about one expert per MoE layer, not all experts;
- ``mt-moe-stats`` runs on the imported model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
import nllb_fixtures as nf  # noqa: E402

from mt.common import pagemem  # noqa: E402
from mt.data.rows import decoder_prefix, source_row  # noqa: E402
from mt.formats import checkpoint as ckpt  # noqa: E402
from mt.generate.cli import moe_stats_main  # noqa: E402
from mt.generate.loading import load_model  # noqa: E402
from mt.generate.translator import Translator  # noqa: E402
from mt.importing.cli import import_main as main  # noqa: E402
from mt.models.moe import MoELayer, is_moe_layer, top2_route  # noqa: E402
from mt.models.transformer import EncoderOut  # noqa: E402

DIRECTIONS = {"eng_Latn": "deu_Latn", "rus_Cyrl": "zho_Hans", "arb_Arab": "hin_Deva", "kor_Hang": "fra_Latn"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return nf.built_moe(tmp_path_factory)


@pytest.fixture(scope="module")
def translator(files):
    return Translator(files["out"] / "checkpoint.pt")


@pytest.fixture(scope="module")
def batch(translator):
    """Right-padded source rows and decoder inputs ``</s> __tgt__ y`` in 4 directions (padding on both sides)."""
    data = nf.sentences(3, seed=3, langs=list(DIRECTIONS))
    ids = translator.encode([s for _, s in data])
    rows = [source_row(x, translator.lang_token(lang), 2) for (lang, _), x in zip(data, ids)]
    targets = translator.encode([s for _, s in nf.sentences(3, seed=4, langs=list(DIRECTIONS.values()))])
    tgt = [
        decoder_prefix(translator.lang_token(DIRECTIONS[lang]), 2, "eos_lang") + x
        for (lang, _), x in zip(data, targets)
    ]
    src, prev = torch.full((len(rows), max(map(len, rows))), 1), torch.full((len(tgt), max(map(len, tgt))), 1)
    for i, (r, t) in enumerate(zip(rows, tgt)):
        src[i, : len(r)], prev[i, : len(t)] = torch.tensor(r), torch.tensor(t)
    assert bool(src.eq(1).any()) and bool(prev.eq(1).any())
    return src, prev


def _hf(files, fixed: bool):
    model = nf.random_nllb_moe(nf.hf_moe_config(files["model"].config.vocab_size))  # same seed: same weights
    if fixed:
        nf.fix_hf_routing(model)
    return model


def test_imported_config_and_layout(files, translator):
    cfg, hf = translator.model.cfg, files["model"]
    assert (cfg.moe_freq, cfg.moe_expert_count, cfg.moe_second_expert_policy, cfg.moe_eom) == (2, 8, "all", 0.2)
    assert (cfg.moe_eval_capacity_token_fraction, cfg.moe_normalize_gate_prob_before_dropping) == (1.0, False)
    for stack in ("encoder", "decoder"):  # the sparse layers are where transformers puts them
        want = [layer.is_sparse for layer in getattr(hf.model, stack).layers]
        assert want == [is_moe_layer(cfg, i) for i in range(4)] == [False, True, False, True]
    state = torch.load(files["out"] / "checkpoint.pt", weights_only=True, mmap=True)
    assert state["moe"]["shards"] == 8 and not [k for k in state["model"] if ".experts." in k]
    assert sorted(p.name for p in files["out"].glob("checkpoint-rank-*.pt")) == sorted(
        f"checkpoint-rank-{e}.pt" for e in range(8)
    )
    sd = hf.state_dict()
    full = translator.model.state_dict()
    for e in (0, 5):
        for ours, theirs in (("fc1_weight", "fc1.weight"), ("fc2_bias", "fc2.bias")):
            got = full[f"decoder.layers.3.ffn.experts.{ours}"][e]
            assert torch.equal(got, sd[f"model.decoder.layers.3.ffn.experts.expert_{e}.{theirs}"])
    assert torch.equal(
        full["encoder.layers.1.ffn.wg.weight"], sd["model.encoder.layers.1.ffn.router.classifier.weight"]
    )


def test_dense_sublayers_and_router_logits_equal_transformers(files, translator, batch):
    """Each of our layers gets the input transformers' layer got (its routing bug changes what follows the
    first sparse layer, so layers are compared one at a time): dense layers give the same output, sparse
    layers the same expert input (attention sublayer, layer norms) and the same router logits."""
    hf, ours = _hf(files, fixed=False), translator.model
    src, prev = batch
    hf_in, hf_out, hf_router = {}, {}, {}

    def keep(store, key, pick):
        return lambda module, *args: store.__setitem__(key, pick(*args))

    hooks = []
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(hf.model, stack).layers):
            first = keep(hf_in, (stack, i), lambda a, k: a[0] if a else k["hidden_states"])
            hooks.append(layer.register_forward_pre_hook(first, with_kwargs=True))
            hooks.append(layer.register_forward_hook(keep(hf_out, (stack, i), lambda a, o: o)))
            if layer.is_sparse:  # the router's input (the expert input) and its logits
                hooks.append(
                    layer.ffn.router.register_forward_hook(keep(hf_router, (stack, i), lambda a, o: (a[0], o[2])))
                )
    with torch.no_grad():
        enc_out = hf(input_ids=src, attention_mask=src.ne(1).long(), decoder_input_ids=prev).encoder_last_hidden_state
    for h in hooks:
        h.remove()

    our_out, our_moe = {}, {}
    hooks = []
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(ours, stack).layers):

            def swap(m, args, key=(stack, i)):
                if key[0] == "encoder":
                    return (hf_in[key], *args[1:])
                enc = args[1]
                return (hf_in[key], EncoderOut(enc_out, enc.pad_mask, enc.attn_mask), *args[2:])

            hooks.append(layer.register_forward_pre_hook(swap))
            hooks.append(layer.register_forward_hook(keep(our_out, (stack, i), lambda a, o: o)))
            if isinstance(layer.ffn, MoELayer):
                hooks.append(layer.ffn.register_forward_pre_hook(keep(our_moe, (stack, i), lambda a: (a[0], a[1]))))
    with torch.no_grad():
        ours(src, prev)
    for h in hooks:
        h.remove()
    real = {"encoder": src.ne(1), "decoder": prev.ne(1)}
    sparse = 0
    for key, out in our_out.items():
        mask = real[key[0]]
        if key not in hf_router:
            assert (out[mask] - hf_out[key][mask]).abs().max().item() <= 1e-4, key
            continue
        sparse += 1
        x, ctx = our_moe[key]
        layer = getattr(ours, key[0]).layers[key[1]].ffn
        logits = x[mask] @ layer.wg.weight.t()
        hf_x, hf_logits = hf_router[key]
        flat = mask.reshape(-1)
        assert (x[mask] - hf_x[flat]).abs().max().item() <= 1e-4, key
        assert (logits - hf_logits[flat]).abs().max().item() <= 1e-4, key
    assert sparse == 4 and len(our_out) == 8


def _logits(model, src, prev, hf: bool):
    with torch.no_grad():
        if hf:
            return model(input_ids=src, attention_mask=src.ne(1).long(), decoder_input_ids=prev).logits
        return model(src, prev)


def test_whole_model_equals_transformers_with_its_routing_fixed(files, translator, batch):
    src, prev = batch
    real = prev.ne(1)
    ours = _logits(translator.model, src, prev, hf=False)
    fixed = _logits(_hf(files, fixed=True), src, prev, hf=True)
    assert (ours[real] - fixed[real]).abs().max().item() <= 1e-4
    broken = _logits(files["model"], src, prev, hf=True)  # transformers as released routes tokens wrongly
    assert (ours[real] - broken[real]).abs().max().item() > 1e-2


def test_translations_equal_fixed_transformers_generate(files, translator, beam=2):
    """Beam search with incremental decoding on both sides (MoE layers route each new token), stopping rules
    as ours (``OurRules`` of test_import_hf)."""
    from test_import_hf import OurRules
    from transformers import GenerationConfig, LogitsProcessorList

    from mt.generate.search import SearchConfig

    hf = _hf(files, fixed=True)
    data = nf.sentences(6, seed=9, langs=list(DIRECTIONS))
    cfg = SearchConfig(beam=beam, max_len_a=0.5, max_len_b=6)
    ours = translator.translate_ids(
        translator.encode([s for _, s in data]), [lang for lang, _ in data], [DIRECTIONS[lang] for lang, _ in data], cfg
    )
    for src_lang, tgt_lang in DIRECTIONS.items():
        idx = [i for i, (lang, _) in enumerate(data) if lang == src_lang]
        rows = [
            source_row(ids, translator.lang_token(src_lang), 2) for ids in translator.encode([data[i][1] for i in idx])
        ]
        src = torch.full((len(rows), max(map(len, rows))), 1)
        for j, r in enumerate(rows):
            src[j, : len(r)] = torch.tensor(r)
        mask = src.ne(1).long()
        maxlen = (mask.sum(1).double() * cfg.max_len_a + cfg.max_len_b).long()
        gc = GenerationConfig(
            num_beams=beam,
            early_stopping=True,
            length_penalty=cfg.lenpen,
            do_sample=False,
            max_new_tokens=200,
            decoder_start_token_id=2,
            forced_bos_token_id=translator.lang_token(tgt_lang),
            eos_token_id=2,
            pad_token_id=1,
            bos_token_id=0,
        )
        with torch.no_grad():
            out = hf.generate(
                input_ids=src,
                attention_mask=mask,
                generation_config=gc,
                logits_processor=LogitsProcessorList([OurRules(translator.banned, maxlen, beam)]),
            )
        for j, i in enumerate(idx):
            seq = out[j].tolist()
            assert ours[i][0].tokens == seq[2 : seq.index(2, 2)], f"sentence {i} ({src_lang}->{tgt_lang})"


def test_fairseq_release_layout_imports_like_the_hf_folder(files, tmp_path):
    """Two local experts per rank file here (fairseq's numbering); one per file, as released: see
    test_import_streams_the_experts."""
    shared = nf.make_fairseq_moe_files(tmp_path / "fs", files["model"], files["spm"], ranks=4)
    assert main(["--format", "fairseq", str(shared), "--out", str(tmp_path / "out")]) == 0
    a = ckpt.load_checkpoint(files["out"] / "checkpoint.pt")
    b = ckpt.load_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (a["model_config"], a["dict_checksum"]) == (b["model_config"], b["dict_checksum"])
    lines = [s for _, s in nf.sentences(4, seed=5, langs=["fra_Latn"])]
    want = Translator(files["out"] / "checkpoint.pt").translate(lines, "fra_Latn", "rus_Cyrl", beam=2)
    got = Translator(tmp_path / "out" / "checkpoint.pt").translate(lines, "fra_Latn", "rus_Cyrl", beam=2)
    assert [h.ids for h in got] == [h.ids for h in want]


def test_experts_are_memory_mapped_from_their_files_for_an_expert_cache(files, translator):
    loaded = load_model(files["out"] / "checkpoint.pt", lazy_experts=True)
    assert sorted(p.name for p in loaded.mapped_files) == sorted(f"checkpoint-rank-{e}.pt" for e in range(8))
    views = [t for layer in loaded.expert_source.values() for w in layer for t in w]
    assert len(views) == 4 * 8 * 4 and pagemem.file_backed([pagemem.tensor_range(t) for t in views])
    lines = [s for _, s in nf.sentences(4, seed=6, langs=["deu_Latn", "hin_Deva"])]
    want = translator.translate(lines, "deu_Latn", "eng_Latn", beam=2)
    cached = Translator(files["out"] / "checkpoint.pt", expert_cache=2)
    assert [h.ids for h in cached.translate(lines, "deu_Latn", "eng_Latn", beam=2)] == [h.ids for h in want]
    assert cached.moe.stats()["misses"] > 0


def test_bf16_import_keeps_the_dense_matrices_bf16_with_the_same_translations(files, tmp_path):
    """--dtype bfloat16, then --bf16 with an expert cache: the dense matrices stay bf16 in memory (not widened
    to fp32 and cast back per op by autocast), LayerNorms and biases fp32, and the output is the same."""
    assert main(["--format", "hf", str(files["hf"]), "--out", str(tmp_path), "--dtype", "bfloat16"]) == 0
    path = tmp_path / "checkpoint.pt"
    lean = Translator(path, bf16=True, expert_cache=2)
    params = dict(lean.model.named_parameters())
    assert params["encoder.layers.0.self_attn.qkv_proj.weight"].dtype == torch.bfloat16
    assert params["embed_tokens.weight"].dtype == params["decoder.layers.1.ffn.wg.weight"].dtype == torch.bfloat16
    assert params["decoder.layers.2.ffn.fc1.bias"].dtype == params["encoder.layer_norm.weight"].dtype == torch.float32
    widened = Translator(path, bf16=True, loaded=load_model(path, lazy_experts=True))
    assert dict(widened.model.named_parameters())["embed_tokens.weight"].dtype == torch.float32
    lines = [s for _, s in nf.sentences(4, seed=12, langs=["eng_Latn", "zho_Hans"])]
    a = lean.translate(lines, "eng_Latn", "kor_Hang", beam=2)
    b = widened.translate(lines, "eng_Latn", "kor_Hang", beam=2)
    assert [h.ids for h in a] == [h.ids for h in b] and [h.score for h in a] == [h.score for h in b]


def test_mt_moe_stats_on_the_imported_model(files, tmp_path, capsys):
    src = tmp_path / "dev.eng"
    src.write_text("\n".join(s for _, s in nf.sentences(6, seed=8, langs=["eng_Latn"])) + "\n", encoding="utf-8")
    out = tmp_path / "stats.json"
    assert (
        moe_stats_main(
            [
                "--path",
                str(files["out"] / "checkpoint.pt"),
                "--input",
                str(src),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--out",
                str(out),
                "--expert-cache",
                "3",
                "--beam",
                "2",
                "--no-progress-bar",
                "--cpu",
            ]
        )
        == 0
    )
    stats = json.loads(out.read_text())
    assert stats["num_experts"] == 8 and list(stats["layers"]) == ["enc1", "enc3", "dec1", "dec3"]
    tokens = sum(
        len(ids) + 2 for ids in Translator(files["out"] / "checkpoint.pt").encode(src.read_text().split("\n")[:-1])
    )
    assert sum(stats["layers"]["enc1"]["assignments"]) == 2 * tokens  # two experts per source token
    assert "expert cache 3 of 8" in capsys.readouterr().err


@pytest.mark.parametrize("prioritized,before", [(False, False), (True, False), (True, True)])
def test_router_with_capacity_dropping_equals_transformers(prioritized, before):
    """Where tokens are over capacity (eval fraction 0.3), our top2_route keeps the assignments and combine
    weights transformers' NllbMoeTop2Router keeps: token order or batch-prioritized, normalised before or
    after dropping."""
    from transformers import NllbMoeConfig
    from transformers.models.nllb_moe.modeling_nllb_moe import NllbMoeTop2Router

    E, N = 8, 40
    config = NllbMoeConfig(
        d_model=16,
        num_experts=E,
        batch_prioritized_routing=prioritized,
        second_expert_policy="all",
        normalize_router_prob_before_dropping=before,
        moe_eval_capacity_token_fraction=0.3,
    )
    router = NllbMoeTop2Router(config).eval()
    torch.manual_seed(0)
    x = torch.randn(N, 16)
    with torch.no_grad():
        _, combine, logits = router(x)
    r = top2_route(logits, -(-3 * N // 10), "all", before, batch_prioritized=prioritized)
    ours = torch.zeros(N, E).index_put_((r.token, r.expert), r.weight)
    assert r.dropped > 0 and torch.allclose(ours, combine, atol=1e-6)


def test_import_streams_the_experts(files, tmp_path):
    """Experts are converted and written one at a time: importing a model whose experts are 9x its dense part
    raises peak RSS by about the dense part plus one expert per MoE layer, far below all the experts; and
    loading the imported model whole (no expert cache) holds one copy of the weights."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    vocab = files["model"].config.vocab_size
    model = nf.nllb_moe_of_size(nf.hf_moe_config(vocab, d=128, layers=4, ffn=1024, heads=4, experts=16))
    experts = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".experts." in n)
    dense = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".experts." not in n)
    big = {
        "hf": nf.make_hf_moe_folder(tmp_path / "hf", files["spm"], model),
        "fairseq": nf.make_fairseq_moe_files(tmp_path / "fs", model, files["spm"], ranks=16),
    }
    del model
    code = "import sys; from pathlib import Path; from mt.common import pagemem; from mt.importing import cli\n"
    for fmt in ("hf", "fairseq"):  # a small import first: torch's code pages count in RSS too
        code += (
            f"cli.import_model('hf', Path({str(files['hf'])!r}), Path({str(tmp_path / ('warm-' + fmt))!r}))\n"
            "open('/proc/self/clear_refs', 'w').write('5')\n"
            "base = pagemem.current_rss()\n"
            f"cli.import_model({fmt!r}, Path({str(big[fmt])!r}), Path({str(tmp_path / ('out-' + fmt))!r}))\n"
            "print(pagemem.peak_rss() - base)\n"
        )
    code += (  # and loading it whole (no expert cache) holds one copy of the experts, not files + concatenation
        "from mt.generate.loading import load_model\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = pagemem.current_rss()\n"
        f"loaded = load_model(Path({str(tmp_path / 'out-hf' / 'checkpoint.pt')!r}))\n"
        "print(pagemem.peak_rss() - base)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one_expert_per_layer = experts // 16
    *imports, load = map(int, proc.stdout.split())
    for fmt, grew in zip(("hf", "fairseq"), imports):
        assert grew < dense + 4 * one_expert_per_layer + (8 << 20), (
            f"{fmt}: peak RSS +{grew >> 20} MiB (dense {dense >> 20} MiB, experts {experts >> 20} MiB)"
        )
    assert len(list((tmp_path / "out-fairseq").glob("checkpoint-rank-*.pt"))) == 16
    for name in ("checkpoint-rank-0.pt", "checkpoint-rank-15.pt", "checkpoint.pt"):  # one expert per file, as released
        a, b = (
            torch.load(tmp_path / d / name, weights_only=True, mmap=True)["model"] for d in ("out-hf", "out-fairseq")
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load < 1.25 * (dense + experts), f"load: peak RSS +{load >> 20} MiB for {(dense + experts) >> 20} MiB"
