"""Validation chrF decoding never emits language tokens (or <s>/<pad>), like mt-generate."""

from __future__ import annotations

import torch
from train_fixtures import make_corpus, one_thread  # noqa: F401 (autouse)

import mt.train.validate as validate
from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import load_direction
from mt.models.config import arch_config
from mt.models.transformer import build_model
from mt.train.criterion import LabelSmoothedCrossEntropy


def test_chrf_decoding_bans_language_tokens(tmp_path, monkeypatch):
    data = make_corpus(tmp_path, (("eng_Latn", "deu_Latn"),), sizes={"deu_Latn-eng_Latn": 8}, n_valid=4)
    d = Dictionary.load(data / "dict.txt")
    langs = d.langs()
    ds = load_direction(data, "valid", "eng_Latn-deu_Latn", d, langs)
    cfg = arch_config("transformer_tiny", vocab_size=len(d), padding_idx=d.pad(), langs=langs, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg)
    # make every language token (and <s>) by far the most likely output at every step
    favoured = [d.lang_index(c) for c in langs] + [d.bos()]
    plain = model.output_layer

    def biased(h):
        logits = plain(h)
        logits[..., favoured] += 100.0
        return logits

    model.output_layer = biased

    decoded: list[list[int]] = []
    real = validate.detokenize

    def spy(ids, dictionary, sp):
        decoded.append(list(ids))
        return real(ids, dictionary, sp)

    monkeypatch.setattr(validate, "detokenize", spy)
    v = validate.Validator(
        {0: ds},
        d,
        max_tokens=512,
        max_source=64,
        max_target=64,
        criterion=LabelSmoothedCrossEntropy(0.1),
        eval_chrf=4,
        spm_model=data / "spm.model",
    )
    scores = v.chrf(model, torch.device("cpu"))
    assert set(scores) == {"eng_Latn-deu_Latn"}
    hyps = decoded[: len(decoded) // 2]  # one batch: all hypotheses first, then all references
    assert len(hyps) == 4
    assert any(hyps), "the model should still produce some tokens"
    banned = set(favoured) | {d.pad()}
    for h in hyps:
        assert not banned & set(h), h
