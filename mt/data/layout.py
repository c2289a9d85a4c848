"""Where files live: the corpus directory (FLORES-200 layout) and fairseq's binarized names.

Corpus directory (what ``mt-data build`` writes and everything downstream reads)::

    {corpus}/train/{src}-{tgt}.{src}      line-aligned bitext per pair (src is eng_Latn for gettext)
    {corpus}/train/{src}-{tgt}.{tgt}
    {corpus}/dev/{lang}.dev               N-way, line-aligned across languages (FLORES-200 layout)
    {corpus}/devtest/{lang}.devtest
    {corpus}/stats.tsv                    per-language counts and resource tier
    {corpus}/mono/{src}-{tgt}.{src}       hidden-parallel monolingual files for mining (shuffled
    {corpus}/mono/{src}-{tgt}.{tgt}         independently, mixed with unpaired distractors)
    {corpus}/mono/{src}-{tgt}.gold.tsv    0-based line_in_src<TAB>line_in_tgt of the hidden pairs

Binarized directory (what ``mt-preprocess`` writes, fairseq names)::

    {destdir}/dict.txt, dict.{lang}.txt
    {destdir}/{split}.{src}-{tgt}.{lang}.bin/.idx     split in train | valid | test
"""

from __future__ import annotations

import os
from pathlib import Path

EVAL_SPLITS = ("dev", "devtest")
# FLORES split name -> fairseq subset name written by mt-preprocess (--validpref -> valid, --testpref -> test)
SUBSET_ALIASES = {"dev": "valid", "devtest": "test", "valid": "valid", "test": "test", "train": "train"}


def train_prefix(corpus: str | os.PathLike, src: str, tgt: str) -> Path:
    return Path(corpus) / "train" / f"{src}-{tgt}"


def mono_prefix(corpus: str | os.PathLike, src: str, tgt: str) -> Path:
    return Path(corpus) / "mono" / f"{src}-{tgt}"


def eval_file(corpus: str | os.PathLike, split: str, lang: str) -> Path:
    return Path(corpus) / split / f"{lang}.{split}"


def bin_prefix(destdir: str | os.PathLike, subset: str, src: str, tgt: str, lang: str) -> Path:
    return Path(destdir) / f"{SUBSET_ALIASES.get(subset, subset)}.{src}-{tgt}.{lang}"
