"""``mine-bitext``'s pipeline: k-NN results -> margin-scored pairs (``mining.margin``) -> the mined TSV.

Output: ``score<TAB>src<TAB>tgt`` sorted by decreasing score, identical (src, tgt) text pairs written
once, at their best score (stopes' ``dedup_bitexts``); ``--pair-prefix P`` also writes the line-aligned
``P.{src_lang}`` / ``P.{tgt_lang}`` files that ``mt-preprocess --trainpref P`` reads; the cut, why it was
chosen and the counts go to ``OUT``'s ``.meta.json``. The texts are read by byte offset (``LineFile``),
so memory holds one offset and hash per line, never the text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import mmap
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mining.embedding_store import EmbeddingSet
from mining.knn import open_knn_dir
from mining.margin import Alignments, MarginConfig, canonical_margin, encoder_of, langs_of, mine, side_sizes
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.textio import check_outputs


@dataclass
class BitextJob:
    """One ``mine-bitext`` run: the k-NN folder, the texts, the outputs and how pairs are scored."""

    knn_dir: str = arg(help="directory with src2tgt.* and tgt2src.* (mine-knn --out-dir)", required=True)
    src_text: str | None = arg(None, "source sentences, one per line, in embedding order")
    tgt_text: str | None = arg(None, "target sentences, one per line, in embedding order")
    out: str = arg("", "output TSV: score<TAB>src<TAB>tgt, best first", required=True)
    dedup: bool = arg(True, "write identical text pairs once (--no-dedup keeps them)")
    pair_prefix: str | None = arg(None, "also write line-aligned PREFIX.{src-lang}/PREFIX.{tgt-lang}")
    src_lang: str | None = arg(None, "source language code for --pair-prefix (default: from meta)")
    tgt_lang: str | None = arg(None, "target language code for --pair-prefix (default: from meta)")
    margin: MarginConfig = field(default_factory=MarginConfig)


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


def mined_meta_path(out: str | os.PathLike) -> Path:
    """Where mine-bitext records the cut and counts: ``mined.tsv`` -> ``mined.meta.json``."""
    out = Path(out)
    return out.with_suffix(".meta.json") if out.suffix == ".tsv" else Path(f"{out}.meta.json")


def run_bitext(job: BitextJob) -> dict:
    """Mine ``job.knn_dir`` into ``job.out`` (and its .meta.json, and the pair files); returns the meta."""
    t0 = time.time()
    fwd, bwd = open_knn_dir(job.knn_dir)
    src_emb = fwd.meta.get("queries") if fwd is not None else bwd.meta.get("index_emb")
    tgt_emb = bwd.meta.get("queries") if bwd is not None else fwd.meta.get("index_emb")
    src_text, tgt_text = _text_for(job.src_text, "src", src_emb), _text_for(job.tgt_text, "tgt", tgt_emb)
    meta_src, meta_tgt = langs_of(fwd, bwd)
    src_lang, tgt_lang = job.src_lang or meta_src, job.tgt_lang or meta_tgt
    if job.pair_prefix and (not (src_lang and tgt_lang) or src_lang == tgt_lang):
        raise UserError("--pair-prefix needs two different language codes: pass --src-lang and --tgt-lang")
    pair_files = {f"--pair-prefix ({c})": f"{job.pair_prefix}.{c}" for c in (src_lang, tgt_lang) if job.pair_prefix}
    meta_path = mined_meta_path(job.out)
    check_outputs(
        {"--src-text": src_text, "--tgt-text": tgt_text, "--calibration": job.margin.calibration},
        {"--out": job.out, "--out (.meta.json)": str(meta_path), **pair_files},
    )
    cfg = dataclasses.replace(job.margin, encoder=encoder_of(fwd, bwd), src_lang=src_lang, tgt_lang=tgt_lang)
    al = mine(fwd, bwd, cfg)
    n_src, n_tgt = side_sizes(fwd, bwd)
    stats = write_bitext(
        al,
        src_text,
        tgt_text,
        job.out,
        dedup=job.dedup,
        pair_prefix=job.pair_prefix,
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
        "knn_dir": str(Path(job.knn_dir).resolve()),
        "encoder": cfg.encoder,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "margin": canonical_margin(cfg.margin),
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
        f"mine-bitext: {stats['written']} pairs -> {job.out} ({cfg.mode}, {canonical_margin(cfg.margin)} margin, "
        f"threshold {th} ({cut.source}) keeps {len(al)} of {al.candidates} candidates, {stats['duplicates']} "
        f"duplicate pairs dropped) in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )
    return meta
