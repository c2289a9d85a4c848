"""How much of the training budget each direction gets: temperature, UniMax and UtiliMax sampling.

``mt-train --sampling-method``:

- ``temperature`` (default, fairseq's): p_i ∝ n_i^(1/T) over sentences (``mt.data.sampler.temperature_probs``).
- ``unimax`` (Chung et al. 2023, arXiv 2304.09151, Algorithm 1): spread the budget B uniformly over the
  directions, but never more than N epochs of any one (``--unimax-max-epochs N``). Directions are visited
  from the smallest up; each gets ``min(remaining budget / directions left, N * size)``, so what a small
  direction cannot use goes to the larger ones. Example, sizes 100, 1000, 10000, 100000 tokens, B = 40000,
  N = 4: 400 (capped), then 39600 / 3 = 13200 > 4000 -> 4000 (capped), then 35600 / 2 = 17800 each.
- ``utilimax`` (Held et al. 2025, arXiv 2501.11747): portfolio optimisation over the same caps. With w the
  share of the budget per direction and u the utilities (``--utilities``), normalised to
  z = (u - mean u) / (max u - min u) so their unit does not matter::

      maximise  z·w - (λ k / 2) ||w||²   subject to  Σ w = 1,  0 <= w_i <= N * size_i / B

  (k directions, λ = ``--utilimax-risk``). The risk term is the Markowitz variance with Σ ∝ I: utilities
  measured by short ablation runs are noisy, and putting the budget on few directions is the risky bet.
  Its optimum is w_i = clip((z_i - ν) / (λ k), 0, cap_i) with ν set so that Σ w = 1 (scipy's brentq finds
  which directions are clipped, then ν is solved exactly); without caps w_i = (1 + (z_i - mean z) / λ) / k.
  Equal utilities give the least concentrated mix under the caps, which is exactly UniMax: the paper's
  "uniform utility" baseline is UtiliMax's special case.

Units. With ``--max-update`` the budget is tokens: updates x ``--update-freq`` x ``--max-tokens`` x the
measured packing fill (the share of ``--max-tokens`` a length-sorted batch really holds), a sentence
counting max(source, target) tokens as batching does. With only ``--max-epoch`` it is sentences:
``--max-epoch`` x the epoch size. Shares of tokens become sentence probabilities p_i ∝ w_i / mean length_i;
the epochs a direction sees are (sentences drawn from it) / (its sentences). Whatever the method, the
sampler turns p into per-epoch counts with ``stream_counts`` (one endless draw), so a direction due less
than one sentence per epoch still gets its share over epochs.

Utilities (``--utilities``): a file, one ``direction<TAB>utility`` per line (``#`` comments, more columns
ignored; ``mt-eval utilities`` writes one from ablation runs), or inline ``pair=value,pair=value``.
Directions not listed get utility 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mt.common.errors import UserError, located
from mt.common.langs import parse_pair
from mt.data.sampler import batch_by_size, stream_counts, temperature_probs

METHODS = ("temperature", "unimax", "utilimax")
FILL_SAMPLE = 20000  # sentences batched to measure how full a --max-tokens batch is


def unimax_budgets(sizes: Sequence[float], budget: float, max_epochs: float) -> np.ndarray:
    """UniMax: budget per direction, in the unit of ``sizes`` and ``budget`` (Chung et al. 2023, Algorithm 1).

    When even N epochs of everything is less than ``budget``, every direction gets its N epochs and the
    rest of the budget is left unassigned (the caller normalises, so all are then repeated alike)."""
    if max_epochs <= 0:
        raise UserError(f"--unimax-max-epochs must be > 0, got {max_epochs}")
    n = np.asarray(sizes, dtype=np.float64)
    out = np.zeros_like(n)
    live = [i for i in np.argsort(n, kind="stable") if n[i] > 0]  # smallest first
    left = float(budget)
    for k, i in enumerate(live):
        out[i] = min(left / (len(live) - k), max_epochs * n[i])
        left -= out[i]
    return out


def utilimax_shares(utilities: Sequence[float], caps: Sequence[float], risk: float) -> np.ndarray:
    """UtiliMax: the budget shares w maximising z·w - (risk k / 2)||w||² on the simplex under ``caps``.

    ``caps`` are the largest shares allowed (N epochs); entries with cap 0 (empty directions) get 0. When
    the caps sum to less than 1 the problem has no feasible point and w = caps / Σ caps (all capped alike)."""
    from scipy.optimize import brentq

    if risk <= 0:
        raise UserError(f"--utilimax-risk must be > 0, got {risk}")
    u = np.asarray(utilities, dtype=np.float64)
    c = np.asarray(caps, dtype=np.float64)
    live = c > 0
    w = np.zeros_like(c)
    if not live.any():
        return w
    if c[live].sum() <= 1.0:
        w[live] = c[live] / c[live].sum()
        return w
    z = np.zeros_like(u)
    spread = u[live].max() - u[live].min()
    if spread > 0:
        z[live] = (u[live] - u[live].mean()) / spread
    scale = risk * int(live.sum())

    def shares(nu: float) -> np.ndarray:
        return np.where(live, np.clip((z - nu) / scale, 0.0, c), 0.0)

    lo = float(z[live].min() - scale * c[live].max()) - 1.0  # every direction at its cap: sum >= 1
    hi = float(z[live].max())  # every direction at 0
    nu = brentq(lambda x: shares(x).sum() - 1.0, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    # the clipped sets at the root found, then ν exactly: Σ_free (z_i - ν) / scale + Σ_capped c_i = 1
    w = shares(nu)
    tol = 1e-12
    capped = live & (w >= c - tol)
    free = live & ~capped & (w > tol)
    if free.any():
        nu = (z[free].sum() - scale * (1.0 - c[capped].sum())) / int(free.sum())
        w = np.where(free, (z - nu) / scale, np.where(capped, c, 0.0))
    return np.clip(w, 0.0, None) / np.clip(w, 0.0, None).sum()


def packing_fill(lengths: Sequence[np.ndarray], max_tokens: int, max_sentences: int = 0, seed: int = 0) -> float:
    """Share of ``max_tokens`` that a batch of length-sorted sentences really holds (tokens, not padding).

    Measured like the sampler packs an epoch: up to ``FILL_SAMPLE`` sentences drawn in proportion to the
    directions' sizes, sorted by length, packed greedily."""
    parts = [np.asarray(x, dtype=np.int64) for x in lengths if len(x)]
    if not parts:
        return 1.0
    pool = np.concatenate(parts)
    rng = np.random.default_rng(seed)
    sample = np.sort(pool[rng.permutation(len(pool))[:FILL_SAMPLE]])
    batches = batch_by_size(sample, sample, max_tokens, max_sentences)
    return float(sample.sum()) / (len(batches) * max_tokens)


@dataclass
class Mixing:
    """The per-direction budget of one run; ``probs(active)`` is what the sampler draws with."""

    method: str
    names: list[str]
    sentences: np.ndarray  # usable sentences per direction
    tokens: np.ndarray  # their tokens, max(source, target) per sentence
    budget: float  # in ``unit``
    unit: str  # "tokens" | "sentences"
    temperature: float = 1.5
    max_epochs: float = 1.0
    utilities: np.ndarray | None = None
    risk: float = 1.0

    def _sizes(self, idx: list[int]) -> np.ndarray:
        return (self.tokens if self.unit == "tokens" else self.sentences)[idx].astype(np.float64)

    def shares(self, active: Sequence[int]) -> np.ndarray:
        """Share of the budget per active direction (sums to 1), in the budget's unit."""
        idx = list(active)
        if self.method == "temperature":
            return self._from_probs(idx, temperature_probs(self.sentences[idx], self.temperature))
        sizes = self._sizes(idx)
        if self.method == "unimax":
            b = unimax_budgets(sizes, self.budget, self.max_epochs)
            return b / b.sum()
        u = np.zeros(len(idx)) if self.utilities is None else self.utilities[idx]
        return utilimax_shares(u, self.max_epochs * sizes / self.budget, self.risk)

    def probs(self, active: Sequence[int]) -> np.ndarray:
        """Sentence sampling probabilities over ``active`` (sums to 1)."""
        idx = list(active)
        if self.method == "temperature":
            return temperature_probs(self.sentences[idx], self.temperature)
        w = self.shares(idx)
        if self.unit == "tokens":
            mean_len = self.tokens[idx] / np.maximum(self.sentences[idx], 1)
            w = np.where(w > 0, w / np.maximum(mean_len, 1e-12), 0.0)
        return w / w.sum()

    def _from_probs(self, idx: list[int], p: np.ndarray) -> np.ndarray:
        if self.unit == "sentences":
            return p
        t = p * self.tokens[idx] / np.maximum(self.sentences[idx], 1)
        return t / t.sum()

    def epochs(self, active: Sequence[int]) -> np.ndarray:
        """Epochs each active direction is planned to see over the whole budget."""
        idx = list(active)
        share = self.shares(idx)
        return share * self.budget / np.maximum(self._sizes(idx), 1e-12)

    def over_budget(self, active: Sequence[int]) -> bool:
        """Whether N epochs of every direction are less than the budget (the caps cannot all hold)."""
        capped_total = self.max_epochs * self._sizes(list(active)).sum()
        return self.method != "temperature" and capped_total < self.budget * (1 - 1e-9)

    def describe(self) -> str:
        cap = f"at most {self.max_epochs:g} epoch{'' if self.max_epochs == 1 else 's'} per direction"
        what = {
            "temperature": f"temperature T={self.temperature:g}",
            "unimax": f"UniMax, {cap}",
            "utilimax": f"UtiliMax, {cap}, risk {self.risk:g}",
        }[self.method]
        return f"{what}; budget {self.budget:,.0f} {self.unit}" if self.unit else what

    def record(self, active: Sequence[int]) -> dict:
        """The ``mixing`` record of train_log.jsonl: per direction its size, probability and planned epochs."""
        idx = list(active)
        p, e = self.probs(idx), self.epochs(idx)
        dirs = {}
        for j, i in enumerate(idx):
            d = {
                "sentences": int(self.sentences[i]),
                "tokens": int(self.tokens[i]),
                "p": float(p[j]),
                "epochs": float(e[j]),
            }
            if self.utilities is not None:
                d["utility"] = float(self.utilities[i])
            dirs[self.names[i]] = d
        return {
            "method": self.method,
            "budget": self.budget,
            "unit": self.unit,
            "max_epochs": self.max_epochs,
            "temperature": self.temperature,
            "risk": self.risk,
            "directions": dirs,
        }


def training_budget(
    sentences: np.ndarray,
    tokens: np.ndarray,
    lengths: Sequence[np.ndarray],
    *,
    max_update: int,
    update_freq: int,
    max_tokens: int,
    max_sentences: int,
    max_epoch: int,
    virtual_epoch_size: int,
    seed: int,
) -> tuple[float, str]:
    """(budget, unit) of a run: tokens from ``--max-update``, else sentences from ``--max-epoch``, else (0, "")."""
    if max_update > 0:
        fill = packing_fill(lengths, max_tokens, max_sentences, seed)
        return float(max_update) * update_freq * max_tokens * fill, "tokens"
    if max_epoch > 0:
        per_epoch = virtual_epoch_size if virtual_epoch_size > 0 else int(sentences.sum())
        return float(max_epoch) * per_epoch, "sentences"
    return 0.0, ""


def load_utilities(spec: str, directions: Sequence[str]) -> np.ndarray:
    """``--utilities``: a file of ``direction<TAB>utility`` lines, or ``pair=value,...``; unlisted pairs get 0."""
    path = Path(spec)
    entries: list[tuple[str, str, str]] = []  # (pair, value, where)
    if path.is_file():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) < 2:
                raise located(path, lineno, f"expected 'direction<TAB>utility', got {line!r}")
            entries.append((parts[0], parts[1], f"{path}:{lineno}: "))
    elif "=" in spec:
        for item in (x.strip() for x in spec.split(",")):
            if item:
                pair, _, value = item.partition("=")
                entries.append((pair.strip(), value.strip(), f"--utilities {spec!r}: "))
    else:
        raise UserError(
            f"--utilities {spec}: no such file (give a file of 'direction<TAB>utility' lines, as "
            "mt-eval utilities writes, or inline pair=value,pair=value)"
        )
    out = np.zeros(len(directions))
    seen: set[str] = set()
    for pair, value, where in entries:
        try:
            parse_pair(pair)
        except UserError as exc:
            raise UserError(where + str(exc)) from None
        if pair not in directions:
            raise UserError(f"{where}{pair} is not in --lang-pairs ({','.join(directions)})")
        if pair in seen:
            raise UserError(f"{where}{pair} is listed twice")
        seen.add(pair)
        try:
            v = float(value)
        except ValueError:
            raise UserError(f"{where}utility {value!r} of {pair} is not a number") from None
        if not math.isfinite(v):
            raise UserError(f"{where}utility of {pair} is {value}: give a finite number")
        out[directions.index(pair)] = v
    return out


def check_flags(method: str, utilities: str, max_epochs: float, risk: float) -> None:
    """mt-train's mixing flags, before anything is loaded."""
    if method not in METHODS:
        raise UserError(f"--sampling-method must be one of {', '.join(METHODS)}, got {method!r}")
    if max_epochs <= 0:
        raise UserError(f"--unimax-max-epochs must be > 0, got {max_epochs}")
    if risk <= 0:
        raise UserError(f"--utilimax-risk must be > 0, got {risk}")
    if method == "utilimax" and not utilities:
        raise UserError(
            "--sampling-method utilimax needs --utilities (a file of 'direction<TAB>utility' lines, e.g. "
            "from mt-eval utilities, or inline pair=value,...)"
        )
    if utilities and method != "utilimax":
        raise UserError(f"--utilities only applies to --sampling-method utilimax (got {method})")


def from_config(cfg: Any, datasets: Sequence[Any], keep: Sequence[np.ndarray]) -> Mixing:
    """The run's ``Mixing`` from mt-train's config (``mt.train.trainer.TrainConfig``), its datasets and usable
    sentences."""
    lengths = [np.maximum(ds.src_sizes[k], ds.tgt_sizes[k]).astype(np.int64) for ds, k in zip(datasets, keep)]
    sentences = np.array([len(k) for k in keep], dtype=np.int64)
    tokens = np.array([int(x.sum()) for x in lengths], dtype=np.int64)
    budget, unit = training_budget(
        sentences,
        tokens,
        lengths,
        max_update=cfg.max_update,
        update_freq=cfg.update_freq,
        max_tokens=cfg.max_tokens,
        max_sentences=cfg.batch_size,
        max_epoch=cfg.max_epoch,
        virtual_epoch_size=cfg.virtual_epoch_size,
        seed=cfg.seed,
    )
    if cfg.sampling_method != "temperature" and budget <= 0:
        raise UserError(
            f"--sampling-method {cfg.sampling_method} needs a training budget: --max-update N (N x "
            "--max-tokens tokens) or --max-epoch N"
        )
    utilities = load_utilities(cfg.utilities, list(cfg.lang_pairs)) if cfg.utilities else None
    return Mixing(
        cfg.sampling_method,
        list(cfg.lang_pairs),
        sentences,
        tokens,
        budget,
        unit,
        cfg.sampling_temperature,
        cfg.unimax_max_epochs,
        utilities,
        cfg.utilimax_risk,
    )


def describe_lines(mix: Mixing, sampler: Any, update: int) -> list[str]:
    """What mt-train prints at start: the method and budget, then per direction p and the epochs it will see."""
    active = sampler.active(update)
    p = sampler.probabilities(update)
    epochs = dict(zip(active, mix.epochs(active))) if mix.unit else {}
    lines = [f"mt-train: sampling: {mix.describe()}"]
    if mix.over_budget(active):
        lines.append(
            f"mt-train: the budget is more than {mix.max_epochs:g} epochs of every direction: all are "
            "repeated more than that, alike (raise --unimax-max-epochs or lower the budget)"
        )
    for i, d in enumerate(mix.names):
        start = sampler.starts[i]
        if start > update:
            when = f"joins at update {start}"
        else:
            when = f"p={p[i]:.3f}" + (f"  {epochs[i]:7.2f} epochs" if i in epochs else "")
            if mix.utilities is not None:
                when += f"  utility {mix.utilities[i]:g}"
        lines.append(f"  {d:<22} {int(mix.sentences[i]):>9} sentences  {when}")
    return lines


def seen_record(mix: Mixing, sampler: Any, data_state: Any) -> dict | None:
    """Sentences and epochs each direction was really drawn so far (None with a curriculum, whose re-planned
    epochs this does not replay): the full epochs of the endless draw plus the batches of the current epoch."""
    if any(s > 0 for s in sampler.starts):
        return None
    counts = stream_counts(sampler.probabilities(0), (data_state.epoch - 1) * sampler.epoch_size(0))
    if data_state.position > 0:
        n = sampler.epoch_size(data_state.plan_start_update) - data_state.consumed_before_plan
        plan = sampler.plan(data_state.epoch, data_state.plan_start_update, n)
        for rows in plan[: data_state.position]:
            counts = counts + np.bincount(rows[:, 0], minlength=len(counts))
    return {
        "sentences": {d: int(c) for d, c in zip(mix.names, counts)},
        "epochs": {d: float(c) / max(int(n), 1) for d, c, n in zip(mix.names, counts, mix.sentences)},
    }
