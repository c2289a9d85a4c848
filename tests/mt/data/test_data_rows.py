"""The language-token layout has one owner (mt.data.rows): training rows and the translator's rows agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import LanguagePairDataset, collate
from mt.data.rows import decoder_prefix, source_row
from mt.generate import translator as translator_mod
from mt.generate.loading import LoadedModel
from mt.models.config import arch_config
from mt.models.transformer import build_model

LAYOUTS = [("first", "lang"), ("first", "eos_lang"), ("last", "eos_lang"), ("last", "lang")]


class _Sentences:
    """The part of an IndexedDataset a LanguagePairDataset reads: binarized rows ending with </s>."""

    def __init__(self, rows: list[list[int]], prefix: str) -> None:
        self.rows, self.prefix = [np.array(r, dtype=np.int64) for r in rows], prefix
        self.sizes = np.array([len(r) for r in rows])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.rows[i]


def _dictionary() -> Dictionary:
    d = Dictionary()
    for piece in ("▁a", "▁b", "▁c", "▁d", "__eng_Latn__", "__deu_Latn__"):
        d.add_symbol(piece)
    return d


@pytest.mark.parametrize("source_langtok, decoder_start", LAYOUTS)
def test_training_rows_and_translator_rows_agree(source_langtok, decoder_start, monkeypatch):
    d = _dictionary()
    eng, deu, eos = d.lang_index("eng_Latn"), d.lang_index("deu_Latn"), d.eos()
    ids = [d.index("▁a"), d.index("▁b"), d.index("▁c")]
    cfg = arch_config(
        "transformer_tiny",
        vocab_size=len(d),
        padding_idx=d.pad(),
        langs=d.langs(),
        source_langtok=source_langtok,
        decoder_start=decoder_start,
    )
    loaded = LoadedModel(build_model(cfg), d, None, Path("model.pt"), Path("."))
    seen = {}

    def fake_search(model, src, prefix, cfg, eos, **kw):
        seen["src"], seen["prefix"] = src[0].tolist(), prefix[0].tolist()
        return [[]] * len(src)

    monkeypatch.setattr(translator_mod, "search", fake_search)
    translator_mod.Translator(None, loaded=loaded).translate_ids([ids], "eng_Latn", "deu_Latn")

    target = [d.index("▁d"), eos]
    ds = LanguagePairDataset(
        "eng_Latn-deu_Latn",
        _Sentences([ids + [eos]], "src"),
        _Sentences([target], "tgt"),
        eng,
        deu,
        0,
        1,
        source_langtok,
        decoder_start,
    )
    batch = collate([(*ds.item(0), ds, 0)], d.pad())
    prefix = decoder_prefix(deu, eos, decoder_start)
    assert seen["src"] == batch.src_tokens[0].tolist() == source_row(ids, eng, eos, source_langtok)
    assert seen["prefix"] == ds.prefix == prefix  # the validation decoder starts from ds.prefix too
    # teacher forcing: the decoder reads prefix + y, and learns the forced tokens after the first, then y </s>
    assert batch.prev_output_tokens[0].tolist() == prefix + target[:-1]
    assert batch.target[0].tolist() == prefix[1:] + target
    assert ds.src_sizes[0] == len(seen["src"]) and ds.tgt_sizes[0] == batch.target.shape[1]
    expected_src = [eng, *ids, eos] if source_langtok == "first" else [*ids, eos, eng]
    expected_prefix = [deu] if decoder_start == "lang" else [eos, deu]
    assert seen["src"] == expected_src and seen["prefix"] == expected_prefix


def test_collate_pads_rows_of_both_layouts_on_the_right():
    d = _dictionary()
    eng, deu, eos, pad = d.lang_index("eng_Latn"), d.lang_index("deu_Latn"), d.eos(), d.pad()
    long, short = [4, 5, 6, eos], [7, eos]
    ds = LanguagePairDataset("x", _Sentences([long, short], "s"), _Sentences([[8, eos], [9, eos]], "t"), eng, deu, 0, 1)
    last = LanguagePairDataset(
        "x", _Sentences([long, short], "s"), _Sentences([[8, eos], [9, eos]], "t"), eng, deu, 0, 1, "last"
    )
    batch = collate([(*ds.item(0), ds, 0), (*last.item(1), last, 0)], pad)
    assert batch.src_tokens.tolist() == [[eng, 4, 5, 6, eos], [7, eos, eng, pad, pad]]
    assert batch.src_tokens.dtype == torch.long
