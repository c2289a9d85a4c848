"""Margin scoring and bitext extraction from k-NN results (``mine-bitext``).

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

Output: ``score<TAB>src<TAB>tgt`` sorted by decreasing score (ties by source, then target row), scores
``>= --threshold`` (left out: the cut calibrated for the encoder and pair, ``mining.calibration``; the cut
and why go to the log and to ``OUT``'s ``.meta.json``); identical (src, tgt) text pairs are written once, at
their best score, as stopes' ``dedup_bitexts``. ``--pair-prefix P`` also writes the line-aligned
``P.{src_lang}`` / ``P.{tgt_lang}`` files that ``mt-preprocess --trainpref P`` reads.

Memory: the k-NN shards are streamed; only per-sentence arrays (best candidate, score, neighbourhood
mean) are kept, plus one int64 byte offset and hash per text line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import mmap
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mining.calibration import Cut, resolve_cut
from mining.embeddings import EmbeddingSet
from mining.index import KnnSet, open_knn_dir
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.textio import check_outputs

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


@dataclass
class MarginConfig:
    margin: str = "ratio"
    mode: str = "max"
    k: int | None = None  # neighbourhood size; None = every neighbour stored by mine-knn
    # a number, or None/"auto": the encoder's calibrated cut (mining.calibration.resolve_cut); "fit": fitted
    threshold: float | str | None = None
    encoder: str | None = None  # encoder name for that default; None: read from the embedding meta
    src_lang: str | None = None  # the pair, for a pair's own calibrated cut; None: read from the embedding meta
    tgt_lang: str | None = None
    calibration: str | None = None  # a calibration file (mine-eval bucc --calibrate) tried before the shipped one


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


# --------------------------------------------------------------------------------------------------
# texts


class LineFile:
    """Random access to the lines of a text file by row number: byte offsets + a hash per line.

    Costs 16 bytes per line in memory; the text itself stays on disk (memory-mapped). ``sha256``: of the
    whole file, to check it against the ``source_sha256`` of the embedding set it should be the text of.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: text file not found")
        if self.path.suffix == ".gz":
            raise UserError(
                f"{self.path}: mine-bitext reads lines by byte offset and needs plain text: "
                f"gunzip it and pass the .txt with --src-text / --tgt-text"
            )
        offsets = [0]
        hashes = []
        whole = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for line in fh:
                offsets.append(offsets[-1] + len(line))
                hashes.append(hash(line.rstrip(b"\r\n")))
                whole.update(line)
        self.sha256 = whole.hexdigest()
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.hashes = np.asarray(hashes, dtype=np.int64)
        self._fh = open(self.path, "rb")
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if self.offsets[-1] > 0 else b""

    def __len__(self) -> int:
        return len(self.hashes)

    def line(self, i: int) -> bytes:
        return self._mm[self.offsets[i] : self.offsets[i + 1]].rstrip(b"\r\n")

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._fh.close()


def embedded_sha256(prefix: str | None) -> str | None:
    """SHA-256 of the text embedded into the set ``prefix`` (None: unknown, e.g. a set from an older mine-embed)."""
    if not prefix:
        return None
    try:
        return EmbeddingSet.open(prefix).meta.get("source_sha256")
    except UserError:
        return None


def _text_for(explicit: str | None, side: str, *emb_prefixes: str | None) -> str:
    """The text file of one side: given, or the 'source' recorded in that side's embedding meta."""
    if explicit:
        return explicit
    for prefix in emb_prefixes:
        if not prefix:
            continue
        try:
            src = EmbeddingSet.open(prefix).meta.get("source")
        except UserError:
            continue
        if src and Path(src).is_file():
            return str(src)
    raise UserError(
        f"the {side} text file is unknown (the embedding meta has no readable 'source'): "
        f"pass --{side}-text FILE, the file that was embedded"
    )


def write_bitext(
    al: Alignments,
    src_text: str | os.PathLike,
    tgt_text: str | os.PathLike,
    out: str | os.PathLike,
    dedup: bool = True,
    pair_prefix: str | None = None,
    src_lang: str = "src",
    tgt_lang: str = "tgt",
    n_src: int | None = None,
    n_tgt: int | None = None,
    src_sha256: str | None = None,
    tgt_sha256: str | None = None,
) -> dict:
    """Write ``score<TAB>src<TAB>tgt`` lines (and optionally the two-file form) atomically.

    Tabs inside a sentence become spaces in the TSV (the two-file form keeps them). ``n_src`` / ``n_tgt``
    and ``src_sha256`` / ``tgt_sha256``: line counts and content hashes the texts must have (those of the
    texts that were embedded), so another file, even one with as many lines, is refused.
    Returns counts: ``{"pairs", "written", "duplicates"}``.
    """
    from tqdm import tqdm

    src_f, tgt_f = LineFile(src_text), LineFile(tgt_text)
    try:
        for f, n, sha, side in ((src_f, n_src, src_sha256, "source"), (tgt_f, n_tgt, tgt_sha256, "target")):
            if n is not None and len(f) != n:
                raise UserError(
                    f"{f.path}: {len(f)} lines but the {side} embeddings have {n} rows: "
                    "pass the text file that was embedded"
                )
            if sha is not None and f.sha256 != sha:
                raise UserError(
                    f"{f.path}: not the text the {side} embeddings were made from (its content differs "
                    f"from the one embedded, sha256 {f.sha256[:12]} != {sha[:12]}): pass the text "
                    f"file that was embedded, or embed this one"
                )
        for f, ids in ((src_f, al.src), (tgt_f, al.tgt)):
            if len(ids) and int(ids.max()) >= len(f):
                raise UserError(
                    f"{f.path}: has {len(f)} lines but mined row {int(ids.max())}: pass the text file that was embedded"
                )
        keep = np.ones(len(al), dtype=bool)
        if dedup and len(al):
            key = np.stack([src_f.hashes[al.src], tgt_f.hashes[al.tgt]], axis=1)
            _, first = np.unique(key, axis=0, return_index=True)
            keep[:] = False
            keep[first] = True  # al is sorted by score, so the first occurrence is the best one
        with contextlib.ExitStack() as stack:
            fo = stack.enter_context(atomic_write(out, "wb"))
            if pair_prefix:
                fs = stack.enter_context(atomic_write(f"{pair_prefix}.{src_lang}", "wb"))
                ft = stack.enter_context(atomic_write(f"{pair_prefix}.{tgt_lang}", "wb"))
            for p in tqdm(
                np.flatnonzero(keep).tolist(),
                desc="write",
                unit="pair",
                file=sys.stderr,
                disable=len(al) < 100_000,
                mininterval=2,
            ):
                s, t = src_f.line(int(al.src[p])), tgt_f.line(int(al.tgt[p]))
                fo.write(b"%.6f\t%s\t%s\n" % (al.scores[p], s.replace(b"\t", b" "), t.replace(b"\t", b" ")))
                if pair_prefix:
                    fs.write(s + b"\n")
                    ft.write(t + b"\n")
    finally:
        src_f.close()
        tgt_f.close()
    written = int(keep.sum())
    return {"pairs": len(al), "written": written, "duplicates": len(al) - written}


# --------------------------------------------------------------------------------------------------
# CLI

_EPILOG = """examples:
  # LASER's BUCC setting: ratio margin, k=4, best pairs both ways taken one-to-one
  mine-bitext --knn-dir work/knn/deu-eng --src-text mono.deu_Latn --tgt-text mono.eng_Latn \\
              --out work/mined/deu_Latn-eng_Latn.tsv
  # stopes-style union above 1.06, plus the two-file form for mt-preprocess --trainpref
  mine-bitext --knn-dir work/knn/deu-eng --mode union --threshold 1.06 --out mined.tsv \\
              --pair-prefix work/mined/train --src-lang deu_Latn --tgt-lang eng_Latn
  # plain cosine, for comparison
  mine-bitext --knn-dir work/knn/deu-eng --margin cosine --threshold 0.8 --out cosine.tsv

Reads {knn-dir}/src2tgt.* and {knn-dir}/tgt2src.* written by mine-knn. The texts default to the
'source' recorded in the embedding meta files. Default threshold (ratio margin, max mode): the cut
calibrated for the encoder on BUCC-style sets (its cut for this language pair, else its median over
the pairs calibrated; mining/calibration.py, or --calibration FILE from mine-eval bucc --calibrate),
1.06 for LASER, and for an encoder nobody calibrated a cut fitted to this pair's score distribution
(--threshold fit asks for that one). The cut and why are logged and written to OUT's .meta.json
(mined.tsv -> mined.meta.json). Other margins and modes: no default cut.
"""


def _threshold_arg(text: str) -> float | str:
    if text in ("auto", "fit"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, auto or fit") from None


def mined_meta_path(out: str | os.PathLike) -> Path:
    """Where mine-bitext records the cut and counts: ``mined.tsv`` -> ``mined.meta.json``."""
    out = Path(out)
    return out.with_suffix(".meta.json") if out.suffix == ".tsv" else Path(f"{out}.meta.json")


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mine-bitext",
        description="Margin-based bitext mining from k-NN results.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--knn-dir", required=True, help="directory with src2tgt.* and tgt2src.* (mine-knn --out-dir)")
    p.add_argument("--src-text", default=None, help="source sentences, one per line, in embedding order")
    p.add_argument("--tgt-text", default=None, help="target sentences, one per line, in embedding order")
    p.add_argument("--out", required=True, help="output TSV: score<TAB>src<TAB>tgt, best first")
    p.add_argument(
        "--margin",
        choices=[*MARGINS, *MARGIN_ALIASES],
        default="ratio",
        help="margin function (default: %(default)s; cosine = absolute)",
    )
    p.add_argument("--mode", choices=MODES, default="max", help="pair selection (default: %(default)s)")
    p.add_argument("--k", type=int, default=None, help="neighbourhood size (default: all neighbours searched)")
    p.add_argument(
        "--threshold",
        type=_threshold_arg,
        default=None,
        help="keep pairs scoring >= this; auto (default): the encoder's calibrated cut for the ratio "
        "margin in max mode (none otherwise); fit: a cut fitted to this pair's scores",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="calibration file (mine-eval bucc --calibrate) tried before the shipped cuts",
    )
    p.add_argument("--no-dedup", dest="dedup", action="store_false", help="keep identical text pairs")
    p.add_argument("--pair-prefix", default=None, help="also write line-aligned PREFIX.{src-lang}/PREFIX.{tgt-lang}")
    p.add_argument("--src-lang", default=None, help="source language code for --pair-prefix (default: from meta)")
    p.add_argument("--tgt-lang", default=None, help="target language code for --pair-prefix (default: from meta)")
    a = p.parse_args(argv)
    t0 = time.time()
    fwd, bwd = open_knn_dir(a.knn_dir)
    src_emb = fwd.meta.get("queries") if fwd is not None else bwd.meta.get("index_emb")
    tgt_emb = bwd.meta.get("queries") if bwd is not None else fwd.meta.get("index_emb")
    src_text, tgt_text = _text_for(a.src_text, "src", src_emb), _text_for(a.tgt_text, "tgt", tgt_emb)
    meta_src, meta_tgt = langs_of(fwd, bwd)
    src_lang, tgt_lang = a.src_lang or meta_src, a.tgt_lang or meta_tgt
    if a.pair_prefix and (not (src_lang and tgt_lang) or src_lang == tgt_lang):
        raise UserError("--pair-prefix needs two different language codes: pass --src-lang and --tgt-lang")
    pair_files = {f"--pair-prefix ({c})": f"{a.pair_prefix}.{c}" for c in (src_lang, tgt_lang) if a.pair_prefix}
    meta_path = mined_meta_path(a.out)
    check_outputs(
        {"--src-text": src_text, "--tgt-text": tgt_text, "--calibration": a.calibration},
        {"--out": a.out, "--out (.meta.json)": str(meta_path), **pair_files},
    )
    cfg = MarginConfig(
        margin=a.margin,
        mode=a.mode,
        k=a.k,
        threshold=a.threshold,
        encoder=encoder_of(fwd, bwd),
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        calibration=a.calibration,
    )
    al = mine(fwd, bwd, cfg)
    n_src, n_tgt = side_sizes(fwd, bwd)
    stats = write_bitext(
        al,
        src_text,
        tgt_text,
        a.out,
        dedup=a.dedup,
        pair_prefix=a.pair_prefix,
        src_lang=src_lang or "src",
        tgt_lang=tgt_lang or "tgt",
        n_src=n_src,
        n_tgt=n_tgt,
        src_sha256=embedded_sha256(src_emb),
        tgt_sha256=embedded_sha256(tgt_emb),
    )
    cut = al.cut
    meta = {
        "format": "nllb-mini-mined/1",
        "knn_dir": str(Path(a.knn_dir).resolve()),
        "encoder": cfg.encoder,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "margin": canonical_margin(a.margin),
        "mode": cfg.mode,
        "k": cfg.k,
        "candidates": al.candidates,
        "threshold": cut.as_dict(),
        **stats,
    }
    with atomic_write(meta_path) as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    th = "none" if cut.value is None else f"{cut.value:.4f}"
    print(f"mine-bitext: threshold {th}: {cut.why}", file=sys.stderr)
    print(
        f"mine-bitext: {stats['written']} pairs -> {a.out} ({cfg.mode}, {canonical_margin(a.margin)} margin, "
        f"threshold {th} ({cut.source}) keeps {len(al)} of {al.candidates} candidates, {stats['duplicates']} "
        f"duplicate pairs dropped) in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )
    return 0
