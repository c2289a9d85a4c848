"""Adapters: hyper-adapters (shared hyper-network, per-pair weights, parameter formula, rescaling),
per-language / per-pair adapters, and --freeze-base fine-tuning in mt-train."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import make_corpus, one_thread  # noqa: F401 (autouse)

from mt.common.errors import UserError
from mt.formats.checkpoint import load_checkpoint
from mt.models.adapters import HyperNetwork, hyper_adapter_param_count, lang_adapter_param_count
from mt.models.config import ForwardContext, arch_config
from mt.models.transformer import Transformer, num_parameters
from mt.train.cli import train_main as main
from mt.train.trainer import TrainConfig, train

LANGS = ["aaa_Latn", "bbb_Latn", "ccc_Latn", "ddd_Latn"]


def _model(seed=0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(arch_config("transformer_tiny", vocab_size=40, dropout=0.0, langs=LANGS, **kw)).eval()


def _ctx(src, tgt):
    return ForwardContext(src_lang=torch.tensor(src), tgt_lang=torch.tensor(tgt))


def test_hyper_network_is_shared_and_gives_each_pair_and_layer_its_own_adapter():
    m = _model(hyper_adapters=True)
    layers = [*m.encoder.layers, *m.decoder.layers]
    hyper = layers[0].adapter.hyper
    assert all(layer.adapter.hyper is hyper for layer in layers)
    assert sum(1 for n, _ in m.named_parameters() if ".hyper." in n) == len(list(hyper.parameters()))
    with torch.no_grad():

        def gen(s, t, layer):
            return torch.cat([w.flatten() for w in hyper(torch.tensor([s]), torch.tensor([t]), layer)])

        w01, w10, w02, w01_l3 = gen(0, 1, 0), gen(1, 0, 0), gen(0, 2, 0), gen(0, 1, 3)
        for a, b in ((w01, w10), (w01, w02), (w01, w01_l3), (w10, w02)):
            assert (a - b).abs().max() > 1e-3
        assert torch.equal(w01, gen(0, 1, 0))
    # a mixed batch: every sentence gets its own pair's adapters (same output as alone)
    src = torch.randint(4, 40, (3, 6))
    prev = torch.randint(4, 40, (3, 5))
    with torch.no_grad():
        both = m(src, prev, _ctx([0, 1, 0], [1, 0, 2]))
        for b, (s, t) in enumerate([(0, 1), (1, 0), (0, 2)]):
            alone = m(src[b : b + 1], prev[b : b + 1], _ctx([s], [t]))
            torch.testing.assert_close(both[b : b + 1], alone, rtol=1e-4, atol=1e-5)
        # the decoder adapters see the source language too (encoder output held fixed by the same source)
        assert (m(src[:1], prev[:1], _ctx([0], [1])) - m(src[:1], prev[:1], _ctx([2], [1]))).abs().max() > 1e-4


def test_adapter_parameter_counts_match_the_formulas():
    base = num_parameters(_model())
    for kw, formula in (
        (dict(hyper_adapters=True, hyper_adapter_bottleneck=16, hyper_adapter_hidden_dim=8), hyper_adapter_param_count),
        (dict(lang_adapters="lang", lang_adapter_bottleneck=16), lang_adapter_param_count),
        (
            dict(lang_adapters="pair", adapter_lang_pairs=["aaa_Latn-bbb_Latn", "bbb_Latn-aaa_Latn"]),
            lang_adapter_param_count,
        ),
    ):
        m = _model(**kw)
        assert num_parameters(m) - base == formula(m.cfg), kw
    # hand-evaluated for one setting: L=4 languages, N=4 layers, d=64, r=16, k=8, p=q=50
    cfg = _model(hyper_adapters=True, hyper_adapter_bottleneck=16, hyper_adapter_hidden_dim=8).cfg
    emb, mlp, gens, lns = 2 * 4 * 50 + 4 * 50, 150 * 8 + 8 + 8 * 8 + 8, 9 * (16 * 64 + 16 + 64 * 16 + 64), 4 * 2 * 64
    assert hyper_adapter_param_count(cfg) == emb + mlp + gens + lns
    # more languages: hyper-adapters grow by 2p per language, per-language adapters by a full adapter per layer
    many = arch_config(
        "transformer_tiny",
        vocab_size=40,
        langs=[f"l{i:02d}_Latn" for i in range(200)],
        hyper_adapters=True,
        lang_adapters="",
    )
    few = arch_config("transformer_tiny", vocab_size=40, langs=LANGS, hyper_adapters=True)
    assert hyper_adapter_param_count(many) - hyper_adapter_param_count(few) == 196 * 2 * 50


def test_rescaling_keeps_generated_adapters_at_a_sane_scale():
    outs = {}
    for no_rescale in (False, True):
        torch.manual_seed(0)
        cfg = arch_config(
            "transformer_base",
            vocab_size=40,
            langs=LANGS,
            hyper_adapters=True,
            hyper_adapter_bottleneck=128,
            hyper_adapter_no_rescale=no_rescale,
        )
        hyper = HyperNetwork(cfg)
        with torch.no_grad():
            w_d, b_d, w_u, b_u = hyper(torch.tensor([0]), torch.tensor([1]), 2)
            x = torch.nn.functional.layer_norm(torch.randn(2000, 512), (512,))
            outs[no_rescale] = float((torch.relu(x @ w_d[0].t() + b_d[0]) @ w_u[0].t() + b_u[0]).std())
    assert 1e-3 < outs[False] < 1.0  # the adapter's residual branch is small next to the unit-scale input
    assert outs[True] / outs[False] == pytest.approx((512 * 128) ** 0.5, rel=0.01)  # grows with sqrt(d * r)


def test_generated_adapter_weights_are_about_6x_smaller_than_a_default_linear_as_documented():
    """The module docstring's number: generated W_d / W_u std vs ``nn.Linear``'s default init, same shape."""
    import mt.models.adapters as adapters

    for arch, r, k in (("transformer_tiny", 16, 64), ("transformer_base", 128, 256)):
        cfg = arch_config(
            arch,
            vocab_size=40,
            langs=LANGS,
            hyper_adapters=True,
            hyper_adapter_bottleneck=r,
            hyper_adapter_hidden_dim=k,
        )
        d = cfg.encoder_embed_dim
        gen, ref = {"d": [], "u": []}, {"d": [], "u": []}
        for seed in range(4):
            torch.manual_seed(seed)
            with torch.no_grad():
                w_d, _, w_u, _ = HyperNetwork(cfg)(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), 1)
                gen["d"].append(float(w_d.std()))
                gen["u"].append(float(w_u.std()))
                ref["d"].append(float(torch.nn.Linear(d, r).weight.std()))  # W_d: r x d, fan-in d
                ref["u"].append(float(torch.nn.Linear(r, d).weight.std()))  # W_u: d x r, fan-in r
        for m in ("d", "u"):
            assert 5.0 < sum(ref[m]) / sum(gen[m]) < 7.0, (arch, m)
    doc = " ".join(adapters.__doc__.split())
    assert "have about 1/6 the std of ``nn.Linear``'s default init of the same shape" in doc
    assert "the scale of a regularly initialised layer at every width" not in doc


def test_lang_adapters_start_as_identity_and_follow_the_language():
    base, m = _model(), _model(lang_adapters="lang")
    missing = m.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing and all(".adapter." in k for k in missing)
    src = torch.randint(4, 40, (3, 6))
    prev = torch.randint(4, 40, (3, 5))

    def ctx():
        return _ctx([0, 1, 2], [1, 0, 1])

    with torch.no_grad():
        torch.testing.assert_close(m(src, prev, ctx()), base(src, prev, ctx()))  # identity at start
        m.encoder.layers[0].adapter.up_weight[1].normal_()  # change the encoder adapter of language 1
        enc_b, enc_m = base.encode(src, ctx()).out, m.encode(src, ctx()).out
    changed = (enc_b - enc_m).abs().amax(dim=(1, 2)) > 1e-4
    assert changed.tolist() == [False, True, False]  # only the sentence whose source is language 1
    pm = _model(lang_adapters="pair", adapter_lang_pairs=["aaa_Latn-bbb_Latn"])
    with pytest.raises(UserError, match="no adapter for the pair bbb_Latn-aaa_Latn"):
        pm(src[:1], prev[:1], _ctx([1], [0]))
    with pytest.raises(UserError, match="need the source and target language"):
        pm(src[:1], prev[:1], ForwardContext())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return make_corpus(
        root,
        (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn")),
        sizes={"deu_Latn-eng_Latn": 32, "eng_Latn-fra_Latn": 16},
        n_valid=4,
    )


def _cfg(data, save_dir, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        lang_pairs=["eng_Latn-deu_Latn", "deu_Latn-eng_Latn"],
        arch="transformer_tiny",
        save_dir=str(save_dir),
        max_tokens=256,
        lr=3e-3,
        warmup_updates=2,
        log_interval=1,
        no_progress_bar=True,
        no_epoch_checkpoints=True,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_freeze_base_trains_only_adapters_on_a_pretrained_model(data, tmp_path):
    train(_cfg(data, tmp_path / "base", max_update=3))
    base = load_checkpoint(tmp_path / "base" / "checkpoint_last.pt")["model"]
    pairs = ["eng_Latn-fra_Latn", "fra_Latn-eng_Latn"]  # a new pair, as when adding a language
    for name, flags in (
        ("lang", {"lang_adapters": "lang"}),
        ("hyper", {"hyper_adapters": True, "hyper_adapter_bottleneck": 16}),
    ):
        save = tmp_path / name
        cfg = _cfg(
            data,
            save,
            lang_pairs=pairs,
            max_update=3,
            freeze_base=True,
            model_overrides=flags,
            finetune_from_model=str(tmp_path / "base" / "checkpoint_last.pt"),
        )
        train(cfg)
        tuned = load_checkpoint(save / "checkpoint_last.pt")["model"]
        adapters = [k for k in tuned if ".adapter." in k]
        assert adapters and set(tuned) - set(adapters) == set(base)
        for k in base:
            assert torch.equal(base[k], tuned[k]), f"{k} changed under --freeze-base"
        if name == "lang":  # up-projections start at zero: they moved
            assert any(tuned[k].abs().max() > 0 for k in adapters if k.endswith("up_weight"))
        # resuming the fine-tuning run keeps the adapters (and the base) as they are
        summary = train(cfg.__class__(**{**cfg.__dict__, "max_update": 5}))
        assert summary["num_updates"] == 5
    with pytest.raises(UserError, match="--freeze-base needs --lang-adapters or --hyper-adapters"):
        train(_cfg(data, tmp_path / "none", max_update=1, freeze_base=True))


def test_help_documents_moe_and_adapter_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--moe-freq",
        "--moe-expert-count",
        "--moe-second-expert-policy",
        "--moe-normalize-gate-prob-before-dropping",
        "--moe-train-capacity-factor",
        "--moe-eval-capacity-token-fraction",
        "--moe-gate-loss-wt",
        "--moe-z-loss-wt",
        "--moe-eom",
        "--moe-fom",
        "--moe-cmr",
        "--cmr-gate-drop",
        "--lang-adapters",
        "--hyper-adapters",
        "--hyper-adapter-lang-dim",
        "--hyper-adapter-layer-dim",
        "--hyper-adapter-hidden-dim",
        "--hyper-adapter-bottleneck",
        "--hyper-adapter-no-rescale",
        "--freeze-base",
        "checkpoint_last-rank-",
    ):
        assert flag in out, flag
    assert "--moe-freq 2 --moe-expert-count 8" in out  # an MoE example
