"""Margin scoring and pair selection over k-NN results: the core of ``mine-bitext`` (``mining.bitext``
runs it and writes the files).

Definitions (Artetxe & Schwenk 2019, as in LASER ``mine_bitexts.py`` and stopes ``global_mining``)::

    margin(x, y) = f( cos(x, y),  sum_{z in NN_k(x)} cos(x, z) / 2k  +  sum_{z in NN_k(y)} cos(y, z) / 2k )
    f = ratio: a / b     distance: a - b     absolute (= plain cosine): a

``NN_k(x)`` are x's k nearest neighbours on the other side (from the src2tgt search), ``NN_k(y)`` y's
(from tgt2src). Candidates are each sentence's k neighbours; selection modes:

- ``forward``: every source sentence with its best-scoring target candidate;
- ``backward``: every target sentence with its best-scoring source candidate;
- ``intersect``: pairs that are each other's best (forward and backward agree);
- ``union``: forward and backward pairs together, a pair found both ways kept once (stopes' fastmax);
- ``max``: the union sorted by score, then taken greedily so that each source and each target sentence
  is used at most once (LASER's ``--retrieval max``, what BUCC results use).

Result: the selected pairs sorted by decreasing score (ties by source, then target row), scores
``>= --threshold`` (left out: the cut calibrated for the encoder and pair, ``mining.calibration``).
``mining.bitext`` writes them as ``score<TAB>src<TAB>tgt``, identical text pairs once.

Memory: the k-NN shards are streamed; only per-sentence arrays (best candidate, score, neighbourhood
mean) are kept.
"""

from __future__ import annotations

from argparse import ArgumentTypeError
from dataclasses import dataclass

import numpy as np

from mining.calibration import Cut, resolve_cut
from mining.embedding_store import EmbeddingSet
from mining.knn import KnnSet
from mt.common.errors import UserError
from mt.common.flags import arg

MARGINS = ("ratio", "distance", "absolute")
MARGIN_ALIASES = {"cosine": "absolute"}
MODES = ("forward", "backward", "intersect", "union", "max")


def canonical_margin(name: str) -> str:
    name = MARGIN_ALIASES.get(name, name)
    if name not in MARGINS:
        raise UserError(f"unknown margin {name!r}; choose from {', '.join(MARGINS)} (or cosine = absolute)")
    return name


def margin_fn(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """f(a, b) for a = cos(x, y) and b = the mean neighbourhood similarity of x and y."""
    name = canonical_margin(name)
    if name == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b
    if name == "distance":
        return a - b
    return np.array(a, copy=True)


def margin_scores(
    sims: np.ndarray, ids: np.ndarray, avg_query: np.ndarray, avg_other: np.ndarray, margin: str
) -> np.ndarray:
    """Margin of each query (rows) with each of its k candidates; -inf where no neighbour was found.

    ``avg_query[i]`` = mean similarity of query i to its k neighbours; ``avg_other[j]`` = the same for
    candidate j on the other side (from the reverse search).
    """
    valid = ids >= 0
    b = (avg_query[:, None].astype(np.float32) + avg_other[np.where(valid, ids, 0)]) / 2
    scores = margin_fn(margin, sims.astype(np.float32), b).astype(np.float32)
    scores[~valid] = -np.inf
    return scores


@dataclass
class Alignments:
    """Mined pairs: row ids on each side and their scores, sorted by decreasing score; ``cut``: the
    threshold ``mine`` applied and why (``mining.calibration.Cut``), ``candidates``: pairs before it."""

    scores: np.ndarray  # float32 [p]
    src: np.ndarray  # int64 [p]
    tgt: np.ndarray  # int64 [p]
    cut: Cut | None = None
    candidates: int | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def sorted(cls, scores, src, tgt) -> "Alignments":
        order = np.lexsort((tgt, src, -scores.astype(np.float64)))
        return cls(scores[order].astype(np.float32), src[order].astype(np.int64), tgt[order].astype(np.int64))

    def above(self, threshold: float | None) -> "Alignments":
        if threshold is None:
            return self
        keep = self.scores >= threshold
        return Alignments(self.scores[keep], self.src[keep], self.tgt[keep], self.cut, self.candidates)


def parse_threshold(text: str) -> float | str:
    """``--threshold``: a number, ``auto`` (the calibrated cut) or ``fit`` (a cut fitted to the scores)."""
    if text in ("auto", "fit"):
        return text
    try:
        return float(text)
    except ValueError:  # argparse shows this message as it is
        raise ArgumentTypeError(f"{text!r} is not a number, auto or fit") from None


@dataclass
class MarginConfig:
    """How pairs are scored and selected (margin, mode, k, threshold, calibration are mine-bitext's flags)."""

    margin: str = arg("ratio", "margin function (cosine = absolute)", choices=[*MARGINS, *MARGIN_ALIASES])
    mode: str = arg("max", "pair selection", choices=MODES)
    # neighbourhood size; None = every neighbour stored by mine-knn
    k: int | None = arg(None, "neighbourhood size (default: all neighbours searched)")
    # a number, or None/"auto": the encoder's calibrated cut (mining.calibration.resolve_cut); "fit": fitted
    threshold: float | str | None = arg(
        None,
        "keep pairs scoring >= this; auto (default): the encoder's calibrated cut for the ratio margin in max mode "
        "(none otherwise); fit: a cut fitted to this pair's scores",
        type=parse_threshold,
    )
    # a calibration file (mine-eval bucc --calibrate) tried before the shipped one
    calibration: str | None = arg(None, "calibration file (mine-eval bucc --calibrate) tried before the shipped cuts")
    encoder: str | None = None  # encoder name for that default; None: read from the embedding meta
    src_lang: str | None = None  # the pair, for a pair's own calibrated cut; None: read from the embedding meta
    tgt_lang: str | None = None


def encoder_of(fwd: KnnSet | None, bwd: KnnSet | None) -> str | None:
    """The encoder that embedded the mined sets, from their embedding meta (None when unknown)."""
    for knn in (fwd, bwd):
        prefix = knn.meta.get("queries") if knn is not None else None
        if prefix:
            try:
                return EmbeddingSet.open(prefix).meta.get("encoder")
            except UserError:
                continue
    return None


def langs_of(fwd: KnnSet | None, bwd: KnnSet | None) -> tuple[str | None, str | None]:
    """The languages of the source and target embedding sets (their meta's ``lang``; None when unknown)."""
    out = []
    for prefix in (
        (fwd.meta.get("queries") if fwd is not None else bwd.meta.get("index_emb")),
        (bwd.meta.get("queries") if bwd is not None else fwd.meta.get("index_emb")),
    ):
        lang = None
        if prefix:
            try:
                lang = EmbeddingSet.open(prefix).meta.get("lang")
            except UserError:
                lang = None
        out.append(lang)
    return out[0], out[1]


def best_candidates(
    knn: KnnSet, avg_query: np.ndarray, avg_other: np.ndarray, margin: str, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stream ``knn``'s shards: for every query, its best candidate (by margin) and that score."""
    n = len(knn)
    best = np.full(n, -1, dtype=np.int64)
    best_score = np.full(n, -np.inf, dtype=np.float32)
    for start, ids, sims in knn.shards():
        ids, sims = ids[:, :k], sims[:, :k]
        sc = margin_scores(sims, ids, avg_query[start : start + ids.shape[0]], avg_other, margin)
        col = sc.argmax(axis=1)
        rows = np.arange(ids.shape[0])
        best[start : start + ids.shape[0]] = ids[rows, col]
        best_score[start : start + ids.shape[0]] = sc[rows, col]
    return best, best_score


def _check_pair(fwd: KnnSet | None, bwd: KnnSet | None) -> None:
    if fwd is None or bwd is None:
        return
    if int(fwd.meta.get("ntotal", len(bwd))) != len(bwd) or int(bwd.meta.get("ntotal", len(fwd))) != len(fwd):
        raise UserError(
            f"{fwd.prefix} ({len(fwd)} queries, index of {fwd.meta.get('ntotal')}) and {bwd.prefix} "
            f"({len(bwd)} queries, index of {bwd.meta.get('ntotal')}) do not describe the same two sets: "
            "re-run mine-knn for both directions on the same embeddings"
        )


def side_sizes(fwd: KnnSet | None, bwd: KnnSet | None) -> tuple[int, int]:
    """Sentences on the source and the target side, from whichever k-NN results are there."""
    n_src = len(fwd) if fwd is not None else int(bwd.meta["ntotal"])
    n_tgt = len(bwd) if bwd is not None else int(fwd.meta["ntotal"])
    return n_src, n_tgt


def _greedy_one_to_one(al: Alignments) -> Alignments:
    """Keep pairs in score order while neither side's sentence is used yet (LASER's max retrieval)."""
    if len(al) == 0:
        return al
    used_src = np.zeros(int(al.src.max()) + 1, dtype=bool)
    used_tgt = np.zeros(int(al.tgt.max()) + 1, dtype=bool)
    keep = np.zeros(len(al), dtype=bool)
    src, tgt = al.src.tolist(), al.tgt.tolist()
    for p in range(len(src)):
        i, j = src[p], tgt[p]
        if not used_src[i] and not used_tgt[j]:
            used_src[i] = used_tgt[j] = True
            keep[p] = True
    return Alignments(al.scores[keep], al.src[keep], al.tgt[keep])


def _dedup_pairs(scores, src, tgt) -> Alignments:
    """Sort, then keep the first (best) occurrence of each (src, tgt) id pair."""
    al = Alignments.sorted(scores, src, tgt)
    if len(al) == 0:
        return al
    key = al.src * (int(al.tgt.max()) + 1) + al.tgt
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(len(al), dtype=bool)
    keep[first] = True
    return Alignments(al.scores[keep], al.src[keep], al.tgt[keep])


def mine(fwd: KnnSet | None, bwd: KnnSet | None, cfg: MarginConfig | None = None) -> Alignments:
    """Score candidates with the margin and select pairs by ``cfg.mode``; threshold applied.

    ``fwd`` = the src2tgt k-NN result, ``bwd`` = tgt2src. Both are needed except for the absolute
    (cosine) margin in forward / backward mode, which only needs the searching direction.
    """
    cfg = cfg or MarginConfig()
    margin = canonical_margin(cfg.margin)
    if cfg.mode not in MODES:
        raise UserError(f"unknown mining mode {cfg.mode!r}; choose from {', '.join(MODES)}")
    need_fwd = cfg.mode != "backward" or margin != "absolute"
    need_bwd = cfg.mode != "forward" or margin != "absolute"
    for needed, knn, name in ((need_fwd, fwd, "src2tgt"), (need_bwd, bwd, "tgt2src")):
        if needed and knn is None:
            raise UserError(
                f"mode {cfg.mode} with the {margin} margin needs the {name} k-NN result; "
                "run mine-knn with --direction both"
            )
    _check_pair(fwd, bwd)
    stored = min(x.k for x in (fwd, bwd) if x is not None)
    k = stored if cfg.k is None else cfg.k
    if not 1 <= k <= stored:
        raise UserError(
            f"--k {k} is out of range: the k-NN results hold {stored} neighbours per query "
            f"(re-run mine-knn with --k {k} for more)"
        )

    n_src, n_tgt = side_sizes(fwd, bwd)
    zeros_src, zeros_tgt = np.zeros(n_src, np.float32), np.zeros(n_tgt, np.float32)
    avg_src = fwd.averages(k) if (fwd is not None and margin != "absolute") else zeros_src
    avg_tgt = bwd.averages(k) if (bwd is not None and margin != "absolute") else zeros_tgt

    fwd_best = fwd_score = bwd_best = bwd_score = None
    if need_fwd:
        fwd_best, fwd_score = best_candidates(fwd, avg_src, avg_tgt, margin, k)
    if need_bwd:
        bwd_best, bwd_score = best_candidates(bwd, avg_tgt, avg_src, margin, k)

    src_rows, tgt_rows = np.arange(n_src, dtype=np.int64), np.arange(n_tgt, dtype=np.int64)
    if cfg.mode == "forward":
        ok = fwd_best >= 0
        al = Alignments.sorted(fwd_score[ok], src_rows[ok], fwd_best[ok])
    elif cfg.mode == "backward":
        ok = bwd_best >= 0
        al = Alignments.sorted(bwd_score[ok], bwd_best[ok], tgt_rows[ok])
    elif cfg.mode == "intersect":
        ok = fwd_best >= 0
        ok[ok] = bwd_best[fwd_best[ok]] == src_rows[ok]
        al = Alignments.sorted(fwd_score[ok], src_rows[ok], fwd_best[ok])
    else:
        okf, okb = fwd_best >= 0, bwd_best >= 0
        scores = np.concatenate([fwd_score[okf], bwd_score[okb]])
        src = np.concatenate([src_rows[okf], bwd_best[okb]])
        tgt = np.concatenate([fwd_best[okf], tgt_rows[okb]])
        al = _dedup_pairs(scores, src, tgt)
        if cfg.mode == "max":
            al = _greedy_one_to_one(al)
    finite = np.isfinite(al.scores)
    al = Alignments(al.scores[finite], al.src[finite], al.tgt[finite]) if not finite.all() else al
    al.candidates = len(al)
    if isinstance(cfg.threshold, (int, float)) and not np.isfinite(cfg.threshold):
        al.cut = Cut(None, "given", "--threshold keeps every pair")
        return al
    src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang
    if src_lang is None or tgt_lang is None:
        meta_src, meta_tgt = langs_of(fwd, bwd)
        src_lang, tgt_lang = src_lang or meta_src, tgt_lang or meta_tgt
    encoder = cfg.encoder if cfg.encoder is not None else encoder_of(fwd, bwd)
    al.cut = resolve_cut(cfg.threshold, margin, cfg.mode, encoder, src_lang, tgt_lang, al.scores, cfg.calibration)
    return al.above(al.cut.value)
