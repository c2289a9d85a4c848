"""Beam search, greedy search and sampling over ``Transformer.encode`` / ``Transformer.decode``, batched.

One loop serves every mode; what changes is how the next candidates are picked:

- beam search (``beam > 1``): the ``2 * beam`` best continuations of each sentence over all its beams;
  a candidate ending in ``</s>`` within the first ``beam`` is *finalised* with the score
  ``sum(log p) / len ** lenpen`` (fairseq's normalisation, ``len`` counts ``</s>``); the next beams are
  the ``beam`` best candidates that do not end. A sentence is done when it holds ``beam`` finalised
  hypotheses (fairseq's stopping rule) or reaches its length limit, where ``</s>`` is forced.
- greedy search is ``beam == 1`` through the same code (the argmax is the single candidate);
- sampling (``sampling=True``): every sentence becomes ``beam`` independent streams of width 1 whose one
  candidate is drawn from the (temperature, top-k, top-p filtered) distribution.

Things fairseq's ``SequenceGenerator`` does that this keeps: incremental decoding with the cached keys and
values reordered whenever beams are pruned, finished sentences dropped from the batch (their rows leave
the cache and the encoder output), the length limit ``min(a * src_len + b, max_target_positions - 1)``
(here per sentence, so a sentence's translation does not depend on its batch-mates), ``--min-len``,
``--unkpen``, ``--no-repeat-ngram-size``, temperature, scores in nats with per-token positional scores.

What it does differently, to be simpler and faster: the first step runs one row per sentence (all beams
are identical then) and expands the cache afterwards; the encoder-decoder keys/values are reordered only
when the set of sentences changes (beams of one sentence share them); the decoder starts with a given
prefix (``__tgt__`` for mt-train's models, ``</s> __tgt__`` for the released NLLB models, see
``mt.data.rows``) and may never produce padding, ``<s>`` or a language token (``banned``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from mt.common.errors import UserError
from mt.common.flags import arg
from mt.generate import incremental
from mt.generate.incremental import DecoderWeights, IncrementalDecoder, Scratch
from mt.models.config import ForwardContext
from mt.models.transformer import DecoderCache, EncoderOut, Transformer

_SEARCH = "search"


@dataclass
class SearchConfig:
    """Decoding options; fairseq's flag names and meanings (``--beam``, ``--lenpen``, ...)."""

    beam: int = arg(4, "beam size; 1 = greedy", group=_SEARCH)
    lenpen: float = arg(
        1.0, "length penalty: score = sum(log p) / len**lenpen; <1 favours short, >1 long", group=_SEARCH
    )
    max_len_a: float = arg(
        1.2, "max output length = a * src_len + b (default a=%(default)s)", show_default=False, group=_SEARCH
    )
    max_len_b: int = arg(10, "(default b=%(default)s)", show_default=False, group=_SEARCH)
    min_len: int = arg(1, "minimum output tokens before </s>", group=_SEARCH)
    nbest: int = arg(1, "hypotheses to output per sentence", group=_SEARCH)
    no_repeat_ngram_size: int = arg(0, "forbid repeating n-grams of this size (0: off)", group=_SEARCH)
    unkpen: float = arg(0.0, "subtract this from <unk>'s log-prob (default: 0)", group=_SEARCH)
    sampling: bool = arg(False, "sample instead of beam search (--beam N = N samples)", group=_SEARCH)
    sampling_topk: int = arg(-1, "sample from the k most likely tokens (-1: all)", show_default=False, group=_SEARCH)
    sampling_topp: float = arg(
        -1.0, "sample from the smallest set with mass >= p (-1: off)", show_default=False, group=_SEARCH
    )
    temperature: float = arg(1.0, "divide logits by this", group=_SEARCH)
    # sampling only: the same inputs and seed give the same samples
    seed: int = arg(1, "sampling seed", group=_SEARCH)

    def check(self) -> "SearchConfig":
        if self.beam < 1:
            raise UserError(f"--beam must be at least 1, got {self.beam}")
        if not 1 <= self.nbest <= self.beam:
            raise UserError(f"--nbest {self.nbest} must be between 1 and --beam {self.beam}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if self.min_len < 0 or self.no_repeat_ngram_size < 0:
            raise UserError("--min-len and --no-repeat-ngram-size must be >= 0")
        if self.sampling_topp > 1:
            raise UserError(f"--sampling-topp must be in (0, 1], got {self.sampling_topp}")
        if (self.sampling_topk > 0 or self.sampling_topp > 0) and not self.sampling:
            raise UserError("--sampling-topk / --sampling-topp need --sampling")
        return self


@dataclass
class Hypo:
    """One finished hypothesis: output ids without ``__tgt__`` and ``</s>``; scores in nats."""

    tokens: list[int]
    score: float  # sum of log-probs / (len(tokens) + 1 + forced prefix tokens) ** lenpen
    positional_scores: list[float]  # log-prob of every output token, ``</s>`` included (len(tokens) + 1)


def max_lengths(src_lengths: torch.Tensor, cfg: SearchConfig, max_target_positions: int) -> torch.Tensor:
    """Per-sentence cap on output tokens before the forced ``</s>`` (fairseq: ``a * src_len + b``)."""
    cap = (src_lengths.double() * cfg.max_len_a + cfg.max_len_b).long()
    return cap.clamp(min=max(cfg.min_len, 1), max=max(max_target_positions - 1, 1))


class _Batch:
    """The live part of the search: rows = live sentences x rows per sentence, all index-aligned."""

    def __init__(self, enc: EncoderOut, ctx_src: torch.Tensor | None, ctx_tgt: torch.Tensor | None) -> None:
        self.enc, self.src_lang, self.tgt_lang = enc, ctx_src, ctx_tgt

    def select_rows(self, rows: torch.Tensor, cache: DecoderCache | None, cross: bool) -> None:
        """Keep/repeat rows; ``cross`` also reorders what is per sentence (encoder output, cross K/V)."""
        if cache is not None:
            for lay in cache.layers.values():
                for part, kv in lay.items():
                    if part != "cross" or cross:
                        for k in list(kv):
                            kv[k] = kv[k].index_select(0, rows)
        if cross:
            self.enc = self.enc.reorder(rows)
            if self.src_lang is not None:
                self.src_lang = self.src_lang.index_select(0, rows)
            if self.tgt_lang is not None:
                self.tgt_lang = self.tgt_lang.index_select(0, rows)

    def ctx(self) -> ForwardContext:
        return ForwardContext(src_lang=self.src_lang, tgt_lang=self.tgt_lang, src_pad_mask=self.enc.pad_mask)


def _ban_repeated_ngrams(lprobs: torch.Tensor, tokens: torch.Tensor, n: int) -> None:
    """-inf for every token that would complete an n-gram already in the row (fairseq's blocking)."""
    L = tokens.size(1)
    if L < n:
        return
    windows = tokens.unfold(1, n, 1)  # (N, L - n + 1, n)
    if n > 1:
        match = (windows[:, :, : n - 1] == tokens[:, L - n + 1 :].unsqueeze(1)).all(-1)
    else:
        match = torch.ones(windows.shape[:2], dtype=torch.bool, device=tokens.device)
    rows, at = match.nonzero(as_tuple=True)
    if rows.numel():
        lprobs[rows, windows[rows, at, n - 1]] = -math.inf


def _sample(lprobs: torch.Tensor, cfg: SearchConfig, gen: torch.Generator | None) -> torch.Tensor:
    """One token per row from the top-k / top-p truncated distribution (fairseq's Sampling search)."""
    probs = lprobs.exp()
    if cfg.sampling_topk > 0:
        k = min(cfg.sampling_topk, probs.size(1))
        kth = probs.topk(k, dim=1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if 0 < cfg.sampling_topp < 1:
        sorted_p, order = probs.sort(dim=1, descending=True)
        before = sorted_p.cumsum(1) - sorted_p  # mass strictly before each token
        sorted_p = sorted_p.masked_fill(before >= cfg.sampling_topp, 0.0)
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_p)
    dead = probs.sum(1) <= 0  # everything banned (cannot happen with </s> allowed): take the argmax
    if bool(dead.any()):
        probs[dead] = torch.nn.functional.one_hot(lprobs[dead].argmax(1), probs.size(1)).to(probs)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


def _compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 when the caller runs search under ``torch.autocast(..., dtype=torch.bfloat16)``, else float32."""
    if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16:
        return torch.bfloat16
    return torch.float32


@torch.no_grad()
def search(
    model: Transformer,
    src_tokens: torch.Tensor,
    prefix: torch.Tensor,
    cfg: SearchConfig,
    eos: int,
    banned: Sequence[int] = (),
    unk: int = 3,
    src_lang: torch.Tensor | None = None,
    tgt_lang: torch.Tensor | None = None,
    use_cache: bool = True,
    fast: bool = True,
    weights: DecoderWeights | None = None,
) -> list[list[Hypo]]:
    """The ``cfg.nbest`` best hypotheses of each right-padded ``__src__ x </s>`` row, best first.

    ``prefix``: (B,) decoder start tokens (``__tgt__`` ids), or (B, P) start sequences (``</s> __tgt__``,
    ``mt.data.rows.decoder_prefix``): the tokens after the first are forced outputs, excluded from the
    hypotheses but counted in the length normalisation with log-prob 0 (HF's ``forced_bos_token_id``;
    fairseq's ``prefix_tokens`` count the same length). ``banned``: ids never generated (padding,
    ``<s>``, language tokens). ``src_lang``/``tgt_lang``: (B,) language indices for the ForwardContext.
    Decoding runs through ``mt.generate.incremental`` when the model allows (``fast``), else through
    ``Transformer.decode`` with a ``DecoderCache``; ``use_cache=False`` re-runs the decoder on the whole
    prefix each step (a reference for tests). Under ``torch.autocast(dtype=torch.bfloat16)`` the matrix
    products run in bf16 (``weights``: bf16 decoder weights prepared once by the caller); scores are
    float32 either way.
    """
    cfg.check()
    model.eval()
    device = src_tokens.device
    B = src_tokens.size(0)
    if B == 0:
        return []
    k = cfg.beam
    group = 1
    if cfg.sampling and k > 1:  # k independent streams per sentence = k times the sentences, width 1
        group, k = k, 1
        expand = torch.arange(B, device=device).repeat_interleave(group)
        src_tokens, prefix = src_tokens.index_select(0, expand), prefix.index_select(0, expand)
        src_lang = None if src_lang is None else src_lang.index_select(0, expand)
        tgt_lang = None if tgt_lang is None else tgt_lang.index_select(0, expand)
    n_sent = src_tokens.size(0)
    prefix = prefix.view(n_sent, -1)
    P = prefix.size(1)
    gen = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.sampling else None

    enc = model.encode(src_tokens, ForwardContext(src_lang=src_lang, tgt_lang=tgt_lang))
    maxlen = max_lengths((~enc.pad_mask).sum(1), cfg, model.cfg.max_target_positions)
    dec: IncrementalDecoder | None = None
    state: _Batch | None = None
    cache = None
    if use_cache and fast and incremental.supports(model):
        dtype = _compute_dtype(device)
        if weights is None or weights.dtype != dtype:
            weights = DecoderWeights(model, dtype)
        with torch.autocast(device.type, enabled=False):
            dec = IncrementalDecoder(model, enc, weights, int(maxlen.max()) + P, src_lang, tgt_lang, n_sent * k)
            for j in range(P - 1):  # the prefix before its last token: cache it, no choice to make
                dec.step(prefix[:, j].to(device=device, dtype=torch.long))
    else:
        state = _Batch(enc, src_lang, tgt_lang)
        cache = DecoderCache() if use_cache else None
    banned_t = torch.tensor(sorted(set(banned)), dtype=torch.long, device=device)

    sent = torch.arange(n_sent, device=device)  # original index of each live sentence
    tokens = prefix.to(device=device, dtype=torch.long)  # (rows, P + step)
    scores = torch.zeros(n_sent, device=device)  # cumulative log-prob per row
    pos = torch.zeros(n_sent, 0, device=device)  # per-token log-probs per row
    finalized: list[list[Hypo]] = [[] for _ in range(n_sent)]
    rows_per_sent = 1  # all beams are equal at step 0: one row per sentence, expanded after the step
    min_maxlen = int(maxlen.min())
    c = 2 * k if k > 1 else 1  # candidates per sentence

    step = 0
    scratch = weights.scratch if dec is not None else Scratch()  # the decoder's: reused by the next batch too
    while True:
        b = sent.numel()
        if dec is not None:
            with torch.autocast(device.type, enabled=False):
                logits = dec.step(tokens[:, -1])
        elif cache is not None:
            logits = model.decode(tokens, state.enc, cache=cache, ctx=state.ctx())[:, -1].float()
        else:
            logits = model.decode(tokens, state.enc, ctx=state.ctx())[:, -1].float()
        if cfg.temperature != 1.0:
            logits = logits / cfg.temperature
        # masks go on log-probs, not renormalised (fairseq); into a buffer reused across steps and batches (a
        # fresh vocabulary-wide tensor per step costs page faults: 97 vs 34 ms for 64 x 256k on the 2-core EPYC)
        lp_buf = scratch.take("lprobs", tuple(logits.shape), logits.dtype, logits.device)
        lprobs = torch.log_softmax(logits, dim=-1, out=lp_buf)
        if banned_t.numel():
            lprobs.index_fill_(1, banned_t, -math.inf)
        if cfg.unkpen:
            lprobs[:, unk] -= cfg.unkpen
        if step < cfg.min_len:
            lprobs[:, eos] = -math.inf
        if cfg.no_repeat_ngram_size > 0:
            _ban_repeated_ngrams(lprobs, tokens, cfg.no_repeat_ngram_size)
        if step >= min_maxlen:  # force </s> where the length limit is reached (keep its real log-prob)
            at_cap = (maxlen <= step).repeat_interleave(rows_per_sent)
            eos_lp = lprobs[:, eos].clamp(min=-1e4)  # finite, so a hypothesis always ends there
            lprobs[at_cap] = -math.inf
            lprobs[:, eos] = torch.where(at_cap, eos_lp, lprobs[:, eos])

        # candidates: (b, c) scores, tokens and the row each one extends
        if cfg.sampling:
            cand_tok = _sample(lprobs, cfg, gen).view(b, 1)
            cand_scores = scores.view(b, 1) + lprobs.gather(1, cand_tok)
            cand_row = torch.arange(b, device=device).view(b, 1)
        elif c == 1:  # greedy: the argmax (max is cheaper than topk)
            best, best_tok = lprobs.max(dim=1)
            cand_scores, cand_tok = (scores + best).view(b, 1), best_tok.view(b, 1)
            cand_row = torch.arange(b, device=device).view(b, 1)
        else:
            # a sentence's best c continuations are among the best c of each of its rows
            top, top_tok = lprobs.topk(c, dim=1)
            total = (top + scores.unsqueeze(1)).view(b, rows_per_sent * c)
            cand_scores, flat = total.topk(c, dim=1)
            cand_tok = top_tok.view(b, rows_per_sent * c).gather(1, flat)
            cand_row = flat // c + torch.arange(b, device=device).unsqueeze(1) * rows_per_sent

        # finalise candidates that end with </s> within the first k (fairseq's rule)
        is_eos = cand_tok.eq(eos) & torch.isfinite(cand_scores)
        fin = is_eos[:, :k]
        done = maxlen <= step
        if bool(fin.any()):
            s_idx, j_idx = fin.nonzero(as_tuple=True)
            r_idx = cand_row[s_idx, j_idx]
            fin_scores = cand_scores[s_idx, j_idx]
            normed = (fin_scores / ((step + P) ** cfg.lenpen)).tolist()  # float32, as fairseq; P - 1 forced tokens
            eos_lp = (fin_scores - scores[r_idx]).tolist()
            toks = tokens.index_select(0, r_idx)[:, P:].tolist()
            poss = pos.index_select(0, r_idx).tolist()
            orig = sent[s_idx].tolist()
            for i, s in enumerate(orig):
                if len(finalized[s]) < k:
                    finalized[s].append(Hypo(toks[i], normed[i], poss[i] + [eos_lp[i]]))
            counts = torch.tensor([len(finalized[s]) for s in sent.tolist()], device=device)
            done = done | (counts >= k)
        if bool(done.all()):
            break

        # next beams: the first k candidates that do not end, for the sentences still running
        ncand = cand_tok.size(1)
        pick = (is_eos.long() * ncand + torch.arange(ncand, device=device)).topk(k, dim=1, largest=False).indices
        live = ~done
        shrink = not bool(live.all())
        if shrink:
            pick, cand_row, cand_tok, cand_scores = pick[live], cand_row[live], cand_tok[live], cand_scores[live]
        new_rows = cand_row.gather(1, pick).view(-1)
        new_tok = cand_tok.gather(1, pick).view(-1)
        new_scores = cand_scores.gather(1, pick).view(-1)
        if shrink:
            kept = live.nonzero().view(-1)
            sent, maxlen = sent[kept], maxlen[kept]
            min_maxlen = int(maxlen.min())
        if dec is not None:
            if rows_per_sent != k or shrink or k > 1:
                dec.select(new_rows, sentences=kept if shrink else None, rows_per_sent=k)
        elif rows_per_sent != k or shrink:  # the sentence set (or its row layout) changed
            state.select_rows(new_rows, cache, cross=True)
        elif k > 1:
            state.select_rows(new_rows, cache, cross=False)
        tokens = torch.cat([tokens.index_select(0, new_rows), new_tok.unsqueeze(1)], dim=1)
        pos = torch.cat(
            [pos.index_select(0, new_rows), (new_scores - scores.index_select(0, new_rows)).unsqueeze(1)], 1
        )
        scores = new_scores
        rows_per_sent = k
        step += 1

    out = []
    for s in range(0, n_sent, group):
        hyps = [h for g in range(group) for h in finalized[s + g]]
        hyps.sort(key=lambda h: -h.score)
        out.append(hyps[: cfg.nbest])
    return out
