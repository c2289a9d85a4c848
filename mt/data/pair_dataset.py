"""Language-pair datasets over the binarized mmap files, and the collater that builds model inputs.

Conventions (NLLB's language tokens; the model's layout, ``mt.data.rows``, places them):
- binarized sentences end with ``</s>`` and carry no language token;
- source row  = ``__src__ x1 .. xn </s>`` (``source_langtok="last"``: ``x1 .. xn </s> __src__``);
- mt-train's models (``decoder_start="lang"``): decoder input = ``__tgt__ y1 .. yn``, target =
  ``y1 .. yn </s>`` (same length as the binarized target);
- the released NLLB-200 models (``decoder_start="eos_lang"``, fairseq's and HF's training rows): decoder
  input = ``</s> __tgt__ y1 .. yn``, target = ``__tgt__ y1 .. yn </s>`` (one longer).

So a direction's source length is ``len(src) + 1`` and its target length ``len(tgt)`` (``+ 1`` for
``eos_lang``); those are the lengths that ``--max-source-positions`` / ``--max-target-positions`` and
``--max-tokens`` see.

Padding: RIGHT padding for source, decoder input and target. Positions are then ``arange`` for every row,
the decoder's causal mask hides target padding on its own, and only encoder keys need a padding mask
(``Batch.src_tokens == pad``). fairseq left-pads sources by default; that buys nothing with SDPA.

A direction ``src-tgt`` reads ``{split}.{src}-{tgt}.{lang}`` or, when only the reverse pair was
binarized, ``{split}.{tgt}-{src}.{lang}`` (the same files serve both directions, as in fairseq's
multilingual tasks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import numpy as np
import torch

from mt.common.errors import UserError
from mt.common.langs import parse_pair
from mt.data.dictionary import Dictionary
from mt.data.indexed import IndexedDataset, dataset_exists
from mt.data.layout import bin_prefix
from mt.data.rows import SOURCE_SPECIALS, decoder_prefix, source_row


def find_direction_files(data: str | os.PathLike, split: str, src: str, tgt: str):
    """(src_prefix, tgt_prefix) of a direction, trying ``src-tgt`` then the reverse pair name; or None."""
    for a, b in ((src, tgt), (tgt, src)):
        ps, pt = bin_prefix(data, split, a, b, src), bin_prefix(data, split, a, b, tgt)
        if dataset_exists(ps) and dataset_exists(pt):
            return ps, pt
    return None


class LanguagePairDataset:
    """One translation direction: ``ds.item(i)`` -> (source ids, target ids) as numpy arrays.

    ``src_sizes``/``tgt_sizes`` are the model-side lengths (source counts its language token, target the
    forced tokens of the decoder prefix). ``source_langtok`` / ``decoder_start``: the model's row layout
    (``TransformerConfig`` fields, ``mt.data.rows``).
    """

    def __init__(
        self,
        name: str,
        src: IndexedDataset,
        tgt: IndexedDataset,
        src_lang_token: int,
        tgt_lang_token: int,
        src_lang_id: int,
        tgt_lang_id: int,
        source_langtok: str = "first",
        decoder_start: str = "lang",
    ) -> None:
        if len(src) != len(tgt):
            raise UserError(
                f"{src.prefix} has {len(src)} sentences but {tgt.prefix} has {len(tgt)}: the pair is not "
                "line-aligned; re-run mt-preprocess on aligned files"
            )
        self.name, self.src, self.tgt = name, src, tgt
        self.src_lang_token, self.tgt_lang_token = src_lang_token, tgt_lang_token
        self.src_lang_id, self.tgt_lang_id = src_lang_id, tgt_lang_id
        self.source_langtok, self.decoder_start = source_langtok, decoder_start
        self.eos = 2  # </s> is 2 in every fairseq dictionary
        self.prefix = decoder_prefix(tgt_lang_token, self.eos, decoder_start)
        self.src_sizes = src.sizes.astype(np.int64) - 1 + SOURCE_SPECIALS  # binarized sentences end with </s>
        self.tgt_sizes = tgt.sizes.astype(np.int64) + len(self.prefix) - 1

    def __len__(self) -> int:
        return len(self.src_sizes)

    def item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.src[i], self.tgt[i]

    def keep_indices(self, max_source: int, max_target: int, max_tokens: int = 0) -> np.ndarray:
        """Indices of sentences that fit; the others are skipped (fairseq's ``--skip-invalid-size``)."""
        ok = (self.src_sizes <= max_source) & (self.tgt_sizes <= max_target) & (self.tgt_sizes >= 1)
        if max_tokens > 0:
            ok &= np.maximum(self.src_sizes, self.tgt_sizes) <= max_tokens
        return np.flatnonzero(ok)


def load_direction(
    data: str | os.PathLike,
    split: str,
    direction: str,
    dictionary: Dictionary,
    langs: list[str],
    required: bool = True,
    source_langtok: str = "first",
    decoder_start: str = "lang",
) -> LanguagePairDataset | None:
    """Open ``direction`` (``eng_Latn-deu_Latn``) of ``split``; None (or a UserError if required) when absent.
    ``source_langtok`` / ``decoder_start``: the model's row layout (``mt.data.rows``)."""
    src, tgt = parse_pair(direction)
    found = find_direction_files(data, split, src, tgt)
    if found is None:
        if not required:
            return None
        raise UserError(
            f"{bin_prefix(data, split, src, tgt, src)}.{{bin,idx}}: no binarized {split} data for {direction} "
            f"(nor under the reverse name {tgt}-{src}); run mt-preprocess for this pair or drop it from --lang-pairs"
        )
    for code in (src, tgt):
        if code not in langs:
            raise UserError(
                f"language {code} of {direction} has no __{code}__ token in {data}/dict.txt: rebuild the dictionary"
            )
    return LanguagePairDataset(
        direction,
        IndexedDataset(found[0]),
        IndexedDataset(found[1]),
        dictionary.lang_index(src),
        dictionary.lang_index(tgt),
        langs.index(src),
        langs.index(tgt),
        source_langtok,
        decoder_start,
    )


@dataclass
class Batch:
    """A collated batch. Token tensors are (B, T) long and right-padded."""

    src_tokens: torch.Tensor
    prev_output_tokens: torch.Tensor
    target: torch.Tensor
    src_lang: torch.Tensor  # (B,) indices into TransformerConfig.langs
    tgt_lang: torch.Tensor
    direction: torch.Tensor  # (B,) index of the direction in the run's --lang-pairs
    ntokens: int  # non-padding target tokens
    nsentences: int

    def to(self, device: torch.device | str) -> "Batch":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[k] = v.to(device, non_blocking=True)
        return Batch(**kw)


def collate(
    samples: list[tuple[np.ndarray, np.ndarray, LanguagePairDataset, int]], pad: int, seq_len_multiple: int = 1
) -> Batch:
    """Build a right-padded batch from ``(src ids, tgt ids, dataset, direction id)`` samples.

    Rows as the sample's dataset lays them out (``mt.data.rows``): the decoder is teacher-forced on
    ``prefix + t`` (``t`` = ``y1 .. yn </s>``), input = that without its last token, target = without its first.
    ``seq_len_multiple``: source and target lengths padded up to a multiple (fairseq's
    ``--required-seq-len-multiple``; padding is masked everywhere, so losses and gradients are the same).
    """
    B = len(samples)
    m = max(1, seq_len_multiple)
    S = -(-(max(len(s) for s, _, _, _ in samples) - 1 + SOURCE_SPECIALS) // m) * m
    T = -(-max(len(t) + len(ds.prefix) - 1 for _, t, ds, _ in samples) // m) * m
    src = np.full((B, S), pad, dtype=np.int64)
    prev = np.full((B, T), pad, dtype=np.int64)
    tgt = np.full((B, T), pad, dtype=np.int64)
    src_lang = np.empty(B, dtype=np.int64)
    tgt_lang = np.empty(B, dtype=np.int64)
    direction = np.empty(B, dtype=np.int64)
    ntokens = 0
    for b, (s, t, ds, d) in enumerate(samples):
        row = source_row(s[:-1], ds.src_lang_token, ds.eos, ds.source_langtok)  # s ends with </s>
        src[b, : len(row)] = row
        p = len(ds.prefix)
        prev[b, :p] = ds.prefix
        prev[b, p : p + len(t) - 1] = t[:-1]
        tgt[b, : p - 1] = ds.prefix[1:]
        tgt[b, p - 1 : p - 1 + len(t)] = t
        src_lang[b], tgt_lang[b], direction[b] = ds.src_lang_id, ds.tgt_lang_id, d
        ntokens += len(t) + p - 1
    return Batch(
        torch.from_numpy(src),
        torch.from_numpy(prev),
        torch.from_numpy(tgt),
        torch.from_numpy(src_lang),
        torch.from_numpy(tgt_lang),
        torch.from_numpy(direction),
        ntokens,
        B,
    )
