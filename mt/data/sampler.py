"""Multilingual sampling (temperature; UniMax / UtiliMax in ``mt.data.mixing``), a phased curriculum, token batching.

Sampling (fairseq's ``--sampling-method temperature`` of translation_multi_simple_epoch, done simply):
direction i with n_i usable sentences is drawn with probability p_i ∝ n_i^(1/T). T=1 keeps the natural
proportions, T→∞ is uniform. An epoch draws ``epoch_size`` sentences (default: the sum of n_i over the
active directions, i.e. the corpus size; ``--virtual-epoch-size`` makes epochs shorter or longer), split
over directions so that over epochs each gets its share: epochs are consecutive stretches of one endless
draw, and ``stream_counts`` says how many of its first t sentences belong to each direction (counts within
a sentence of p_i * t at every t). Rounding each epoch on its own would give a direction due 0.3 sentences
per epoch nothing, forever; here it gets one about every third epoch. A direction asked for more sentences
than it has cycles through fresh permutations (every sentence once before any repeats).

Determinism and resume: an epoch's plan (the list of global batches) is a pure function of
``(seed, epoch, start_update, n_samples)`` via ``np.random.default_rng([seed, epoch, start_update])``.
The loop's data position is therefore four integers (``DataState``): no iterator or RNG state to pickle,
and a resumed run rebuilds exactly the same batches.

Curriculum (``--curriculum FILE``, NLLB's phased training for low-resource pairs): a text file, one
``pair<TAB>start_update`` per line (any whitespace works; ``#`` starts a comment), e.g.::

    # low-resource pairs join after 2000 updates
    eng_Latn-fuv_Latn   2000
    fuv_Latn-eng_Latn   2000

Pairs not listed are active from update 0. When the active set changes (checked before every update),
the rest of the current epoch is re-planned with the new distribution: the epoch keeps its number and
draws ``epoch_size(new set) - already consumed`` more sentences.

Batching (fairseq's ``--max-tokens``): sentences are sorted by (source length, target length) after a
random shuffle, then packed greedily while ``batch_size * max(longest source, longest target)`` stays
within ``max_tokens`` (padded tokens, source or target whichever is larger) and, if set, ``batch_size <=
max_sentences``; batch order is then shuffled. Batches mix directions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mt.common.errors import UserError, located
from mt.common.langs import parse_pair
from mt.data.pair_dataset import Batch, LanguagePairDataset, collate


def temperature_probs(sizes: Sequence[int], temperature: float) -> np.ndarray:
    """p_i ∝ n_i^(1/T); empty directions get 0."""
    if temperature <= 0:
        raise UserError(f"--sampling-temperature must be > 0, got {temperature}")
    n = np.asarray(sizes, dtype=np.float64)
    if n.size == 0 or n.sum() <= 0:
        raise UserError("no training sentences in any active direction")
    w = np.where(n > 0, n / n.max(), 0.0) ** (1.0 / temperature)  # scaled first: no overflow for big n
    return w / w.sum()


def stream_counts(p: np.ndarray, total: int) -> np.ndarray:
    """How many of the first ``total`` sentences of an endless draw with probabilities ``p`` go to each direction.

    Sainte-Lague / Webster apportionment: direction i's j-th sentence (j = 0, 1, ...) falls due at time
    (j + 1/2) / p_i and the ``total`` earliest are taken (ties: lower index first). The counts sum to
    ``total``, are each within (1 + p_i (k - 2)) / 2 of ``p_i * total`` (k directions; under 1 for every
    direction smaller than 1 / (k - 2)), and never decrease as ``total`` grows, so the counts of a stretch
    ``[a, b)`` of the draw, ``stream_counts(p, b) - stream_counts(p, a)``, are never negative (largest-remainder
    rounding of the cumulative totals can take a sentence back: the Alabama paradox).
    """
    p = np.asarray(p, dtype=np.float64)
    k, live = len(p), p > 0
    counts = np.zeros(k, dtype=np.int64)
    if total <= 0 or not live.any():
        return counts
    counts[live] = np.floor(total * p[live] + 0.5).astype(np.int64)  # nearly the answer; fixed up below
    while True:  # make the taken sentences exactly the earliest ``total``: at most ~k steps
        nxt = np.full(k, np.inf)
        nxt[live] = (counts[live] + 0.5) / p[live]  # when each direction's next sentence falls due
        last = np.full(k, -np.inf)
        has = counts > 0
        last[has] = (counts[has] - 0.5) / p[has]  # when its last taken one fell due
        i = int(np.argmin(nxt))  # earliest not taken (ties: lowest index)
        j = k - 1 - int(np.argmax(last[::-1]))  # latest taken (ties: highest index)
        excess = int(counts.sum()) - total
        if excess < 0:
            counts[i] += 1
        elif excess > 0:
            counts[j] -= 1
        elif (last[j], j) > (nxt[i], i):
            counts[j] -= 1
            counts[i] += 1
        else:
            return counts


def sample_indices(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` items of ``pool``: whole fresh permutations while needed, then a partial one."""
    if count <= 0 or len(pool) == 0:
        return np.zeros(0, dtype=np.int64)
    full, rest = divmod(count, len(pool))
    parts = [pool[rng.permutation(len(pool))] for _ in range(full)]
    if rest:
        parts.append(pool[rng.permutation(len(pool))[:rest]])
    return np.concatenate(parts).astype(np.int64)


def batch_by_size(
    src_len: np.ndarray, tgt_len: np.ndarray, max_tokens: int, max_sentences: int = 0
) -> list[np.ndarray]:
    """Greedy packing of already-ordered sentences; returns index arrays (positions in the inputs)."""
    batches: list[np.ndarray] = []
    start, longest, n = 0, 0, len(src_len)
    lens = np.maximum(src_len, tgt_len).tolist()
    for i, size in enumerate(lens):
        if size > max_tokens:
            raise UserError(f"a sentence of {size} tokens exceeds --max-tokens {max_tokens}; raise --max-tokens")
        new_longest = max(longest, size)
        count = i - start + 1
        if count > 1 and (new_longest * count > max_tokens or (max_sentences and count > max_sentences)):
            batches.append(np.arange(start, i))
            start, new_longest = i, size
        longest = new_longest
    if start < n:
        batches.append(np.arange(start, n))
    return batches


@dataclass
class Curriculum:
    """direction -> first update at which it is sampled (directions not listed start at 0)."""

    start: dict[str, int]

    @classmethod
    def load(cls, path: str | os.PathLike, directions: Sequence[str]) -> "Curriculum":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: curriculum file not found (format: one 'pair<TAB>start_update' per line)")
        start: dict[str, int] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise located(path, lineno, f"expected 'pair<TAB>start_update', got {line!r}")
            pair, upd = parts
            try:
                parse_pair(pair)
            except UserError as exc:
                raise located(path, lineno, str(exc)) from None
            if pair not in directions:
                raise located(path, lineno, f"{pair} is not in --lang-pairs ({','.join(directions)}); add it there")
            try:
                n = int(upd)
            except ValueError:
                raise located(path, lineno, f"start update {upd!r} is not an integer") from None
            if n < 0:
                raise located(path, lineno, f"start update {n} is negative")
            if pair in start:
                raise located(path, lineno, f"{pair} is listed twice")
            start[pair] = n
        return cls(start)

    def start_of(self, direction: str) -> int:
        return self.start.get(direction, 0)


@dataclass
class DataState:
    """Where the loop is in the data; everything else is recomputed from the seed."""

    epoch: int = 1
    plan_start_update: int = 0  # update at which the current plan (this epoch's remainder) was built
    consumed_before_plan: int = 0  # sentences of this epoch consumed by earlier plans
    position: int = 0  # batches of the current plan already consumed

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


class MultilingualSampler:
    """Plans epochs of global batches over several directions; see the module docstring."""

    def __init__(
        self,
        datasets: Sequence[LanguagePairDataset],
        keep: Sequence[np.ndarray],
        temperature: float,
        max_tokens: int,
        seed: int,
        curriculum: Curriculum | None = None,
        max_sentences: int = 0,
        virtual_epoch_size: int = 0,
        pad: int = 1,
        mixing: Any = None,
        seq_len_multiple: int = 1,
    ) -> None:
        self.datasets, self.keep = list(datasets), list(keep)
        self.names = [d.name for d in self.datasets]
        self.temperature, self.max_tokens, self.max_sentences = temperature, max_tokens, max_sentences
        self.seed, self.virtual_epoch_size, self.pad = seed, virtual_epoch_size, pad
        self.seq_len_multiple = seq_len_multiple  # collate pads lengths to it (--required-seq-len-multiple)
        self.mixing = mixing  # mt.data.mixing.Mixing (UniMax, UtiliMax); None: temperature sampling
        self.curriculum = curriculum or Curriculum({})
        self.starts = [self.curriculum.start_of(n) for n in self.names]
        if not any(s == 0 for s in self.starts):
            raise UserError("the curriculum leaves no pair active at update 0: list at least one pair with start 0")
        temperature_probs([len(k) for k in self.keep], temperature)  # validates T and non-empty data

    def active(self, update: int) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.starts) if s <= update)

    def probabilities(self, update: int) -> np.ndarray:
        """Sampling probability of every direction at ``update`` (0 for those not yet active)."""
        act = self.active(update)
        p = np.zeros(len(self.datasets))
        if self.mixing is not None:
            p[list(act)] = self.mixing.probs(act)
        else:
            p[list(act)] = temperature_probs([len(self.keep[i]) for i in act], self.temperature)
        return p

    def epoch_size(self, update: int) -> int:
        if self.virtual_epoch_size > 0:
            return self.virtual_epoch_size
        return int(sum(len(self.keep[i]) for i in self.active(update)))

    def counts(self, epoch: int, start_update: int, n_samples: int) -> np.ndarray:
        """Sentences per direction for the last ``n_samples`` of ``epoch`` (the whole epoch, or what is left of it
        when the curriculum re-plans).

        Epoch e is the stretch [(e - 1) * S, e * S) of one endless draw (S: the epoch size), so the rounding
        carries over from epoch to epoch; a pure function of the arguments, so a resumed run gets the same.
        """
        n = max(n_samples, 0)
        end = epoch * max(self.epoch_size(start_update), n)
        p = self.probabilities(start_update)
        return stream_counts(p, end) - stream_counts(p, end - n)

    def plan(self, epoch: int, start_update: int, n_samples: int) -> list[np.ndarray]:
        """Global batches: each an (b, 2) int64 array of (direction, sentence index) rows."""
        rng = np.random.default_rng([self.seed, epoch, start_update])
        counts = self.counts(epoch, start_update, n_samples)
        dirs, idx = [], []
        for d, c in enumerate(counts):
            if c:
                idx.append(sample_indices(rng, self.keep[d], int(c)))
                dirs.append(np.full(int(c), d, dtype=np.int64))
        if not idx:
            return []
        dirs_a, idx_a = np.concatenate(dirs), np.concatenate(idx)
        src_len = np.empty(len(idx_a), dtype=np.int64)
        tgt_len = np.empty(len(idx_a), dtype=np.int64)
        for d in np.unique(dirs_a):
            m = dirs_a == d
            src_len[m] = self.datasets[d].src_sizes[idx_a[m]]
            tgt_len[m] = self.datasets[d].tgt_sizes[idx_a[m]]
        perm = rng.permutation(len(idx_a))
        order = perm[np.lexsort((tgt_len[perm], src_len[perm]))]  # primary: source length, then target
        rows = np.stack([dirs_a[order], idx_a[order]], axis=1)
        batches = batch_by_size(src_len[order], tgt_len[order], self.max_tokens, self.max_sentences)
        return [rows[batches[i]] for i in rng.permutation(len(batches))]

    def collate(self, rows: np.ndarray) -> Batch:
        samples = []
        for d, i in rows.tolist():
            s, t = self.datasets[d].item(i)
            samples.append((s, t, self.datasets[d], d))
        return collate(samples, self.pad, self.seq_len_multiple)


def shard_rows(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's part of a global batch: every ``world``-th sentence (strided keeps lengths balanced)."""
    return rows[rank::world]
