"""``Translator``: the Python API for translating text with a trained checkpoint (CTranslate2's shape).

    from mt.generate.translator import Translator
    tr = Translator("ckpt/checkpoint_best.pt", device="cpu", bf16=True)
    hyps = tr.translate(["Hello world.", "Save the file?"], "eng_Latn", "deu_Latn", beam=4)
    print(hyps[0].text, hyps[0].score)
    print(tr.translate("One sentence.", "eng_Latn", "deu_Latn").text)   # a str in, one Hypothesis out

It does SentencePiece, the ``__src__ x </s>`` source rows (or the layout the model was trained with:
``mt.data.rows``), length-bucketed batching (sentences sorted by length and packed up to ``max_tokens``
source tokens, so little padding is computed), the search (``mt.generate.search``) and puts the results
back in input order. Scores are in nats (natural log), length-normalised as fairseq does; the CLIs print
them in base 2 as fairseq does.

As the CLIs do, an empty or blank sentence gets an empty translation (score 0, nothing searched). What may
disappoint is said with a ``TranslatorWarning`` (once per call): sources cut to ``max_source_positions``,
directions outside the checkpoint's ``lang_pairs`` (zero-shot). A language the model does not have is a
``UserError`` that lists the model's languages.
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from typing import Callable, Protocol, Sequence, overload

import torch

from mt.common.cpu import bf16_warning
from mt.common.errors import UserError
from mt.common.langs import check_code
from mt.data.rows import SOURCE_SPECIALS, decoder_prefix, source_row
from mt.generate import incremental, moe_inference
from mt.generate.loading import LoadedModel, banned_ids, load_model
from mt.generate.moe_inference import MoEInferenceConfig
from mt.generate.quantize import check_quantize, quantize_linears_
from mt.generate.search import Hypo, SearchConfig, search
from mt.models import gemm_shapes


@dataclass
class Hypothesis:
    """One translation: detokenised ``text``; ``tokens`` are its SentencePiece pieces (no ``</s>``)."""

    text: str
    score: float  # length-normalised log-probability, nats
    tokens: list[str]
    positional_scores: list[float]  # per token, ``</s>`` last (len(tokens) + 1 values), nats
    ids: list[int]  # dictionary ids of ``tokens``


class TranslatorWarning(UserWarning):
    """A translation ran but may disappoint: sources cut to fit, a direction the model was not trained on."""


Progress = Callable[[int, int], None]  # (sentences done, sentences in all), called after each batch
Warn = Callable[[str], None]


def _warn(message: str) -> None:
    warnings.warn(message, TranslatorWarning, stacklevel=4)


def _listing(items: Sequence[str], limit: int = 12) -> str:
    """``a, b, c`` trimmed to ``limit`` items: ``a, b, ... (40 in all)``."""
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"


def _empty_hypo() -> Hypo:
    """The translation of an empty sentence: nothing (the CLIs print an empty line for it)."""
    return Hypo(tokens=[], score=0.0, positional_scores=[])


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


class ModelOptions(Protocol):
    """The model options a generation command's config carries (mt-generate, -interactive, -translate,
    mt-moe-stats): what ``Translator.from_options`` needs."""

    path: str
    device: str
    bf16: bool
    data: str
    spm_model: str
    threads: int
    quantize: str  # "none" | "int8"
    moe: MoEInferenceConfig


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
        quantize: str = "none",
    ) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        self.moe_config = MoEInferenceConfig(
            moe_gating, moe_eval_capacity_token_fraction, expert_cache, expert_offload, expert_placement or ""
        ).check()
        world = moe_inference.world_size()
        self.device = moe_inference.device_for(device, world)
        self.int8 = check_quantize(quantize, self.device, bf16)
        if bf16 and (slow := bf16_warning(self.device.type)):
            _warn(slow)
        self.loaded = loaded or load_model(
            checkpoint_path, data, spm_model, self.device, lazy_experts=self.moe_config.lazy(world), bf16=bf16
        )
        self.model, self.dictionary, self.spm = self.loaded.model, self.loaded.dictionary, self.loaded.spm
        self.bf16 = bf16
        self.moe = moe_inference.setup(
            self.loaded, self.moe_config, self.device, torch.bfloat16 if bf16 else torch.float32, int8=self.int8
        )
        if self.int8:
            quantize_linears_(self.model)
        gemm_shapes.inference_linears_(self.model)  # the encoder's float32 products on oneDNN too
        self.banned = banned_ids(self.dictionary)
        self.max_source_positions = self.model.cfg.max_source_positions
        self._lang_set = frozenset(self.langs)
        self._weights: dict[torch.dtype, incremental.DecoderWeights] = {}

    @classmethod
    def from_options(cls, cfg: ModelOptions) -> "Translator":
        """The Translator a command's options ask for; "" for --data / --spm-model means "find it"."""
        return cls(
            cfg.path,
            cfg.device,
            cfg.bf16,
            data=cfg.data or None,
            spm_model=cfg.spm_model or None,
            threads=cfg.threads,
            quantize=cfg.quantize,
            **asdict(cfg.moe),
        )

    def decoder_weights(self) -> incremental.DecoderWeights | None:
        """Decoder matrices in the compute dtype, made once (the weights of a Translator do not change)."""
        if not incremental.supports(self.model):
            return None
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        if dtype not in self._weights:
            self._weights[dtype] = incremental.DecoderWeights(self.model, dtype, int8=self.int8)
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

    @property
    def lang_pairs(self) -> list[str]:
        """The directions the checkpoint was trained on (``src-tgt``); empty when it does not record them."""
        return self.loaded.lang_pairs

    def check_lang(self, code: str, what: str = "language") -> str:
        """``code``, or a UserError that lists the languages this model has."""
        check_code(code, what)
        if code not in self._lang_set:
            raise UserError(
                f"{what} {code}: {self.loaded.path.name} has no such language; its languages: {_listing(self.langs)}"
            )
        return code

    def lang_token(self, code: str, what: str = "language") -> int:
        return self.dictionary.lang_index(self.check_lang(code, what))

    def untrained(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """The directions among ``pairs`` that the checkpoint's ``lang_pairs`` do not list (none if unrecorded)."""
        trained = set(self.lang_pairs)
        if not trained:
            return []
        return [d for d in dict.fromkeys(f"{s}-{t}" for s, t in pairs) if d not in trained]

    # --- text <-> ids ------------------------------------------------------------------------------
    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """SentencePiece + dictionary ids, without language token and ``</s>``."""
        _not_a_str(sentences, "encode")
        if self.spm is None:
            raise UserError("this Translator has no SentencePiece model: pass spm_model=...")
        pieces = self.spm.encode_batch(sentences)
        return [self.dictionary.encode_pieces(p, append_eos=False) for p in pieces]

    @property
    def source_limit(self) -> int:
        """Most ids of one sentence the model reads (``max_source_positions`` less ``__src__`` and ``</s>``)."""
        return self.max_source_positions - SOURCE_SPECIALS

    def source_length(self, ids: Sequence[int]) -> int:
        """Length the model sees: ``__src__ x </s>``."""
        return len(ids) + SOURCE_SPECIALS

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
        progress: Progress | None = None,
        warn: Warn | None = None,
    ) -> list[list[Hypo]]:
        """n-best ``Hypo`` lists for id sequences (no language token, no ``</s>``), in input order.

        An empty sequence gets one empty ``Hypo`` (nothing searched; ``on_batch`` gets those first). Sources
        longer than the model's ``max_source_positions`` are cut to fit and ``warn`` (default: a
        ``TranslatorWarning``) says how many, as it does for directions outside the checkpoint's
        ``lang_pairs``. ``on_batch(indices, hyps)`` and ``progress(done, total)`` are called after each batch.
        """
        cfg = (cfg or SearchConfig()).check()
        warn = warn or _warn
        n = len(src_ids)
        srcs, tgts = _per_sentence(src_lang, n, "source language"), _per_sentence(tgt_lang, n, "target language")
        for codes, what in ((srcs, "source language"), (tgts, "target language")):
            for code in dict.fromkeys(codes):
                self.check_lang(code, what)
        self._warn_input(src_ids, srcs, tgts, warn)
        langs = self.langs
        eos, pad = self.dictionary.eos(), self.dictionary.pad()
        limit = self.source_limit
        rows = [list(ids[:limit]) for ids in src_ids]
        results: list[list[Hypo]] = [[] if rows[i] else [_empty_hypo()] for i in range(n)]
        live = [i for i in range(n) if rows[i]]
        done = n - len(live)
        if done and on_batch is not None:  # the empty ones first, so a caller that prints per batch misses none
            empty = [i for i in range(n) if not rows[i]]
            on_batch(empty, [results[i] for i in empty])
        weights = self.decoder_weights()
        for batch in length_batches([len(rows[i]) + SOURCE_SPECIALS for i in live], max_tokens, batch_size):
            idx = [live[j] for j in batch]
            S = max(len(rows[i]) for i in idx) + SOURCE_SPECIALS
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
                    self.model,
                    src.to(dev),
                    prefix.to(dev),
                    cfg,
                    eos,
                    banned=self.banned,
                    unk=self.dictionary.unk(),
                    src_lang=src_lang_ids.to(dev),
                    tgt_lang=tgt_lang_ids.to(dev),
                    weights=weights,
                )
            for i, h in zip(idx, out):
                results[i] = h
            if on_batch is not None:
                on_batch(idx, out)
            done += len(idx)
            if progress is not None:
                progress(done, n)
        if progress is not None and n and not live:
            progress(n, n)
        return results

    def _warn_input(self, src_ids: Sequence[Sequence[int]], srcs: list[str], tgts: list[str], warn: Warn) -> None:
        """One warning per kind: sources cut to fit, directions the model was not trained on."""
        limit = self.source_limit
        cut = sum(len(ids) > limit for ids in src_ids)
        if cut:
            warn(
                f"{cut} of {len(src_ids)} source sentence(s) have more than {limit} tokens (the model's "
                f"max_source_positions {self.max_source_positions} less the language token and </s>): "
                "cut to fit, their ends are not translated"
            )
        untrained = self.untrained(list(zip(srcs, tgts)))
        if untrained:
            k = sum(f"{s}-{t}" in untrained for s, t in zip(srcs, tgts))
            warn(
                f"{k} sentence(s) in direction(s) {_listing(untrained)} that {self.loaded.path.name} was not trained "
                f"on (it was trained on {_listing(self.lang_pairs)}): expect poor zero-shot translations"
            )

    def hypothesis(self, h: Hypo) -> Hypothesis:
        return Hypothesis(self.detokenize(h.tokens), h.score, self.pieces(h.tokens), h.positional_scores, h.tokens)

    def translate_batch(
        self,
        sentences: Sequence[str],
        src_lang: str | Sequence[str],
        tgt_lang: str | Sequence[str],
        max_tokens: int = 4096,
        batch_size: int = 0,
        progress: Progress | None = None,
        **options,
    ) -> list[list[Hypothesis]]:
        """n-best lists (``nbest=...``, best first) for each sentence, in input order. ``sentences`` is a
        list (a single ``str`` is refused, as CTranslate2's ``translate_batch`` does: use ``translate``).

        ``options`` are ``SearchConfig`` fields: beam, lenpen, max_len_a, max_len_b, min_len, nbest,
        no_repeat_ngram_size, unkpen, sampling, sampling_topk, sampling_topp, temperature, seed.
        ``progress(done, total)`` is called after each batch (e.g. to move a progress bar).
        """
        _not_a_str(sentences, "translate_batch", "; use translate(text, ...) for one sentence")
        known = {f.name for f in fields(SearchConfig)}
        bad = sorted(set(options) - known)
        if bad:
            raise TypeError(f"unknown option(s) {', '.join(bad)}; expected some of {', '.join(sorted(known))}")
        cfg = SearchConfig(**options)
        sentences = list(sentences)
        ids = [e if s.strip() else [] for s, e in zip(sentences, self.encode(sentences))]  # blank: empty output
        out = self.translate_ids(ids, src_lang, tgt_lang, cfg, max_tokens, batch_size, progress=progress)
        return [[self.hypothesis(h) for h in hs] for hs in out]

    @overload
    def translate(
        self,
        sentences: str,
        src_lang: str,
        tgt_lang: str,
        max_tokens: int = ...,
        batch_size: int = ...,
        progress: Progress | None = ...,
        **options,
    ) -> Hypothesis: ...

    @overload
    def translate(
        self,
        sentences: Sequence[str],
        src_lang: str | Sequence[str],
        tgt_lang: str | Sequence[str],
        max_tokens: int = ...,
        batch_size: int = ...,
        progress: Progress | None = ...,
        **options,
    ) -> list[Hypothesis]: ...

    def translate(
        self,
        sentences: str | Sequence[str],
        src_lang: str | Sequence[str],
        tgt_lang: str | Sequence[str],
        max_tokens: int = 4096,
        batch_size: int = 0,
        progress: Progress | None = None,
        **options,
    ) -> Hypothesis | list[Hypothesis]:
        """The best translation of each sentence, in input order; a single ``str`` gets a single
        ``Hypothesis`` (as a Hugging Face tokenizer takes one text or a list). See ``translate_batch``."""
        if isinstance(sentences, str):
            return self.translate([sentences], src_lang, tgt_lang, max_tokens, batch_size, progress, **options)[0]
        best = self.translate_batch(sentences, src_lang, tgt_lang, max_tokens, batch_size, progress, **options)
        return [hs[0] for hs in best]


def _not_a_str(sentences: object, method: str, hint: str = "") -> None:
    """A str is a sequence of characters: translating it as a list would translate each character."""
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"{method}() takes a list of sentences, not a {type(sentences).__name__}{hint}")
