"""``Translator``: the Python API for translating text with a trained checkpoint (CTranslate2's shape).

    from mt.generate.translator import Translator
    tr = Translator("ckpt/checkpoint_best.pt", device="cpu", bf16=True)
    hyps = tr.translate(["Hello world.", "Save the file?"], "eng_Latn", "deu_Latn", beam=4)
    print(hyps[0].text, hyps[0].score)

It does SentencePiece, the ``__src__ x </s>`` source rows (or the layout the model was trained with:
``mt.data.rows``), length-bucketed batching (sentences sorted by length and packed up to ``max_tokens``
source tokens, so little padding is computed), the search (``mt.generate.search``) and puts the results
back in input order. Scores are in nats (natural log), length-normalised as fairseq does; the CLIs print
them in base 2 as fairseq does.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Callable, Sequence

import torch

from mt.data.langs import check_code
from mt.data.rows import decoder_prefix, source_row
from mt.errors import UserError
from mt.generate.loading import LoadedModel, banned_ids, load_model
from mt.generate import incremental, moe_inference
from mt.generate.moe_inference import MoEInferenceConfig
from mt.generate.search import Hypo, SearchConfig, search


@dataclass
class Hypothesis:
    """One translation: detokenised ``text``; ``tokens`` are its SentencePiece pieces (no ``</s>``)."""

    text: str
    score: float  # length-normalised log-probability, nats
    tokens: list[str]
    positional_scores: list[float]  # per token, ``</s>`` last (len(tokens) + 1 values), nats
    ids: list[int]  # dictionary ids of ``tokens``


def length_batches(lengths: Sequence[int], max_tokens: int = 0, batch_size: int = 0) -> list[list[int]]:
    """Indices grouped by length: sorted (stable, shortest first), each batch within ``max_tokens`` padded
    source tokens and ``batch_size`` sentences (0 = no limit). A sentence longer than ``max_tokens`` gets
    a batch of its own. Depends only on ``lengths``, so the same inputs always batch the same way."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = lengths[i]
        grown = max(longest, n) * (len(cur) + 1)
        if cur and ((max_tokens and grown > max_tokens) or (batch_size and len(cur) >= batch_size)):
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches


def _per_sentence(value: str | Sequence[str], n: int, what: str) -> list[str]:
    if isinstance(value, str):
        return [check_code(value, what)] * n
    value = list(value)
    if len(value) != n:
        raise UserError(f"{what}: {len(value)} language codes for {n} sentences")
    return [check_code(v, what) for v in value]


class Translator:
    """A loaded checkpoint ready to translate. ``device``: "cpu", "cuda", "cuda:1"...; ``bf16``: autocast.

    Sparse-MoE checkpoints (``mt.generate.moe_inference``): ``moe_gating`` "dynamic" (default) or "static"
    (the padded fairseq baseline, capacity ``moe_eval_capacity_token_fraction``); ``expert_cache`` K > 0
    keeps K experts per MoE layer resident, the others in host memory or memory-mapped from the checkpoint
    (``expert_offload`` auto | host | mmap); under torchrun experts are split over the ranks
    (``expert_placement``: a placement.json of mt-moe-stats). ``moe_stats()`` / ``moe_summary()`` report
    cache hits and expert memory.
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike,
        device: str = "cpu",
        bf16: bool = False,
        data: str | os.PathLike | None = None,
        spm_model: str | os.PathLike | None = None,
        threads: int = 0,
        loaded: LoadedModel | None = None,
        moe_gating: str = "dynamic",
        moe_eval_capacity_token_fraction: float | None = None,
        expert_cache: int = 0,
        expert_offload: str = "auto",
        expert_placement: str = "",
    ) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        self.moe_config = MoEInferenceConfig(
            moe_gating, moe_eval_capacity_token_fraction, expert_cache, expert_offload, expert_placement or ""
        ).check()
        world = moe_inference.world_size()
        self.device = moe_inference.device_for(device, world)
        self.loaded = loaded or load_model(checkpoint_path, data, spm_model, self.device,
                                           lazy_experts=self.moe_config.lazy(world))  # fmt: skip
        self.model, self.dictionary, self.spm = self.loaded.model, self.loaded.dictionary, self.loaded.spm
        self.bf16 = bf16
        self.moe = moe_inference.setup(self.loaded, self.moe_config, self.device, torch.bfloat16 if bf16 else torch.float32)
        self.banned = banned_ids(self.dictionary)
        self.max_source_positions = self.model.cfg.max_source_positions
        self._weights: dict[torch.dtype, incremental.DecoderWeights] = {}

    def decoder_weights(self) -> incremental.DecoderWeights | None:
        """Decoder matrices in the compute dtype, made once (the weights of a Translator do not change)."""
        if not incremental.supports(self.model):
            return None
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        if dtype not in self._weights:
            self._weights[dtype] = incremental.DecoderWeights(self.model, dtype)
        return self._weights[dtype]

    @property
    def langs(self) -> list[str]:
        return self.loaded.langs

    @property
    def rank(self) -> int:
        """This process's rank in expert-parallel inference (0 otherwise): only rank 0 writes outputs."""
        return self.moe.rank if self.moe is not None else 0

    def moe_stats(self) -> dict | None:
        """MoE inference statistics (expert cache hits / misses / hit rate, expert memory); None if dense."""
        return self.moe.stats() if self.moe is not None else None

    def moe_summary(self) -> str | None:
        """One line for stderr describing ``moe_stats()``; None for a dense model."""
        return self.moe.summary() if self.moe is not None else None

    def lang_token(self, code: str) -> int:
        return self.dictionary.lang_index(code)

    # --- text <-> ids ------------------------------------------------------------------------------
    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """SentencePiece + dictionary ids, without language token and ``</s>``."""
        if self.spm is None:
            raise UserError("this Translator has no SentencePiece model: pass spm_model=...")
        pieces = self.spm.encode_batch(sentences)
        return [self.dictionary.encode_pieces(p, append_eos=False) for p in pieces]

    def source_length(self, ids: Sequence[int]) -> int:
        """Length the model sees: ``__src__ x </s>``."""
        return len(ids) + 2

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.dictionary[i] for i in ids]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.spm.decode(self.pieces(ids)) if self.spm is not None else " ".join(self.pieces(ids))

    # --- search ----------------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def translate_ids(
        self,
        src_ids: Sequence[Sequence[int]],
        src_lang: str | Sequence[str],
        tgt_lang: str | Sequence[str],
        cfg: SearchConfig | None = None,
        max_tokens: int = 4096,
        batch_size: int = 0,
        on_batch: Callable[[list[int], list[list[Hypo]]], None] | None = None,
    ) -> list[list[Hypo]]:
        """n-best ``Hypo`` lists for id sequences (no language token, no ``</s>``), in input order.

        Sources longer than the model's ``max_source_positions`` are cut to fit (the batch jobs report
        such lines before they get here). ``on_batch(indices, hyps)`` is called after each batch.
        """
        cfg = (cfg or SearchConfig()).check()
        n = len(src_ids)
        srcs, tgts = _per_sentence(src_lang, n, "source language"), _per_sentence(tgt_lang, n, "target language")
        langs = self.langs
        eos, pad = self.dictionary.eos(), self.dictionary.pad()
        limit = self.max_source_positions - 2
        rows = [list(ids[:limit]) for ids in src_ids]
        results: list[list[Hypo]] = [[] for _ in range(n)]
        weights = self.decoder_weights()
        for idx in length_batches([len(r) + 2 for r in rows], max_tokens, batch_size):
            S = max(len(rows[i]) for i in idx) + 2
            src = torch.full((len(idx), S), pad, dtype=torch.long)
            for b, i in enumerate(idx):
                row = source_row(rows[i], self.lang_token(srcs[i]), eos, self.model.cfg.source_langtok)
                src[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            start = self.model.cfg.decoder_start
            prefix = torch.tensor([decoder_prefix(self.lang_token(tgts[i]), eos, start) for i in idx])
            src_lang_ids = torch.tensor([langs.index(srcs[i]) for i in idx], dtype=torch.long)
            tgt_lang_ids = torch.tensor([langs.index(tgts[i]) for i in idx], dtype=torch.long)
            dev = self.device
            with self.autocast():
                out = search(
                    self.model, src.to(dev), prefix.to(dev), cfg, eos, banned=self.banned, unk=self.dictionary.unk(),
                    src_lang=src_lang_ids.to(dev), tgt_lang=tgt_lang_ids.to(dev), weights=weights,
                )  # fmt: skip
            for i, h in zip(idx, out):
                results[i] = h
            if on_batch is not None:
                on_batch(idx, out)
        return results

    def hypothesis(self, h: Hypo) -> Hypothesis:
        return Hypothesis(self.detokenize(h.tokens), h.score, self.pieces(h.tokens), h.positional_scores, h.tokens)

    def translate_batch(
        self,
        sentences: Sequence[str],
        src_lang: str | Sequence[str],
        tgt_lang: str | Sequence[str],
        max_tokens: int = 4096,
        batch_size: int = 0,
        **options,
    ) -> list[list[Hypothesis]]:
        """n-best lists (``nbest=...``, best first) for each sentence, in input order.

        ``options`` are ``SearchConfig`` fields: beam, lenpen, max_len_a, max_len_b, min_len, nbest,
        no_repeat_ngram_size, unkpen, sampling, sampling_topk, sampling_topp, temperature, seed.
        """
        known = {f.name for f in fields(SearchConfig)}
        bad = sorted(set(options) - known)
        if bad:
            raise TypeError(f"unknown option(s) {', '.join(bad)}; expected some of {', '.join(sorted(known))}")
        cfg = SearchConfig(**options)
        out = self.translate_ids(self.encode(sentences), src_lang, tgt_lang, cfg, max_tokens, batch_size)
        return [[self.hypothesis(h) for h in hs] for hs in out]

    def translate(
        self,
        sentences: Sequence[str],
        src_lang: str | Sequence[str],
        tgt_lang: str | Sequence[str],
        max_tokens: int = 4096,
        batch_size: int = 0,
        **options,
    ) -> list[Hypothesis]:
        """The best translation of each sentence, in input order (see ``translate_batch`` for options)."""
        return [hs[0] for hs in self.translate_batch(sentences, src_lang, tgt_lang, max_tokens, batch_size, **options)]
