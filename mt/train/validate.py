"""Validation during training: loss per direction on ``valid`` and chrF++ of greedy translations.

Loss: every valid sentence that fits the position limits, batched by length; in data-parallel runs each
rank scores its strided share of every batch and the sums are all-reduced. chrF++ (``--eval-chrf N``):
rank 0 greedy-decodes the first N valid sentences of each direction with the decoder cache, turns
hypothesis and reference ids back into text with the SentencePiece model and scores them with
sacrebleu's ``CHRF(word_order=2)``; the other ranks wait.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext

import numpy as np
import torch

from mt.common import distributed
from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import LanguagePairDataset, collate
from mt.data.sampler import batch_by_size, shard_rows
from mt.data.spm import SpmTokenizer
from mt.generate import banned_ids, greedy_decode
from mt.models.config import ForwardContext
from mt.models.transformer import Transformer
from mt.train.criterion import LabelSmoothedCrossEntropy

LN2 = math.log(2)


def load_spm(path: str | os.PathLike) -> SpmTokenizer:
    """The SentencePiece model that detokenises hypotheses and references for chrF."""
    return SpmTokenizer(
        path, hint="--eval-chrf needs it to detokenise (pass --spm-model, or create it with mt-spm train)"
    )


def detokenize(ids: list[int], dictionary: Dictionary, sp: SpmTokenizer) -> str:
    return sp.decode(dictionary.string(ids))


class Validator:
    def __init__(
        self,
        datasets: dict[int, LanguagePairDataset],
        dictionary: Dictionary,
        max_tokens: int,
        max_source: int,
        max_target: int,
        criterion: LabelSmoothedCrossEntropy,
        eval_chrf: int = 0,
        spm_model: str | os.PathLike | None = None,
    ) -> None:
        self.datasets, self.dictionary = datasets, dictionary
        self.criterion = criterion  # the training loss, called without aux losses: the translation loss alone
        self.eval_chrf = eval_chrf
        self.sp = load_spm(spm_model) if eval_chrf > 0 and datasets else None
        self.batches: dict[int, list[np.ndarray]] = {}
        self.keep: dict[int, np.ndarray] = {}
        for d, ds in datasets.items():
            keep = ds.keep_indices(max_source, max_target, max_tokens)
            self.keep[d] = keep
            order = keep[np.lexsort((ds.tgt_sizes[keep], ds.src_sizes[keep]))]
            self.batches[d] = [order[b] for b in batch_by_size(ds.src_sizes[order], ds.tgt_sizes[order], max_tokens)]

    @torch.no_grad()
    def losses(self, model: Transformer, device: torch.device, rank: int, world: int, bf16: bool) -> dict[str, dict]:
        model.eval()
        names = sorted(self.datasets)
        sums = torch.zeros(len(names), 3, dtype=torch.float64)
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        pad = self.dictionary.pad()
        for row, d in enumerate(names):
            ds = self.datasets[d]
            for idx in self.batches[d]:
                local = shard_rows(idx, rank, world)
                if len(local) == 0:
                    continue
                batch = collate([(*ds.item(int(i)), ds, d) for i in local], pad).to(device)
                ctx = ForwardContext(src_lang=batch.src_lang, tgt_lang=batch.tgt_lang)
                mask = batch.target.ne(pad)
                with amp:
                    hidden = model(
                        batch.src_tokens, batch.prev_output_tokens, ctx, target_mask=mask, features_only=True
                    )
                    out = self.criterion(hidden, model.output_weight, batch.target[mask])
                sums[row, 0] += float(out.loss)
                sums[row, 1] += float(out.nll_loss)
                sums[row, 2] += out.ntokens
        sums = distributed.all_reduce_sum(sums.to(device)).cpu()
        result = {}
        for row, d in enumerate(names):
            loss, nll, ntok = sums[row].tolist()
            if ntok > 0:
                nll2 = nll / ntok / LN2
                result[self.datasets[d].name] = {
                    "loss": loss / ntok / LN2,
                    "nll_loss": nll2,
                    "ppl": 2**nll2,
                    "ntokens": int(ntok),
                }
        return result

    @torch.no_grad()
    def chrf(self, model: Transformer, device: torch.device, batch_size: int = 64) -> dict[str, float]:
        """chrF++ per direction of greedy translations of the first ``eval_chrf`` valid sentences."""
        from sacrebleu.metrics import CHRF

        model.eval()
        metric = CHRF(word_order=2)
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        scores = {}
        banned = banned_ids(self.dictionary)  # never <s>, <pad> or a language token in a hypothesis
        for d in sorted(self.datasets):
            ds = self.datasets[d]
            chosen = self.keep[d][: self.eval_chrf]
            if len(chosen) == 0:
                continue
            chosen = chosen[np.argsort(ds.src_sizes[chosen], kind="stable")]
            hyps, refs = [], []
            for start in range(0, len(chosen), batch_size):
                items = [(*ds.item(int(i)), ds, d) for i in chosen[start : start + batch_size]]
                batch = collate(items, pad).to(device)
                prefix = torch.tensor([ds.prefix] * len(items))  # the model's decoder start (mt.data.rows)
                out = greedy_decode(
                    model,
                    batch.src_tokens,
                    prefix,
                    eos,
                    src_lang=batch.src_lang,
                    tgt_lang=batch.tgt_lang,
                    banned=banned,
                )
                hyps += [detokenize(h, self.dictionary, self.sp) for h in out]
                refs += [detokenize(t.tolist(), self.dictionary, self.sp) for _, t, _, _ in items]
            scores[ds.name] = metric.corpus_score(hyps, [refs]).score
        return scores
