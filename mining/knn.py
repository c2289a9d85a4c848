"""k-NN search between two sides of sharded embeddings (``mine-knn``), over the indexes of ``mining.index``.

Why this shape: mining needs, for every sentence of each side, its k nearest neighbours on the other
side and their similarities (the margin's neighbourhood). Everything streams shard by shard, so memory
is bounded by the index plus one batch of queries plus the ``n x k`` result arrays, whatever the corpus.

k-NN result layout for a query set searched against an index, prefix ``P`` (e.g. ``knn/src2tgt``)::

    P.meta.json        {"format": "nllb-mini-knn/1", "k", "queries", "index", "nprobe", "ntotal", "total",
                        "direction", "index_emb", "shards": [{"start", "rows"}]}
                       (queries / index / index_emb: absolute paths of the query set, index, indexed set)
    P.0000.ids.npy     int64 [rows, k]   neighbour row ids in the index (-1: none found)
    P.0000.sims.npy    float32 [rows, k] cosine similarities, best first (-inf where ids == -1)
    P.0000.avg.npy     float32 [rows]    mean similarity to the k neighbours (the margin's denominator part)

Shard ``i`` of the result matches shard ``i`` of the query embeddings. A shard whose three files exist
(``avg`` is written last) is finished and skipped on re-run; the meta file is written when all are done.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mining.embedding_store import EmbeddingSet, load_npy, npy_matches, read_meta, save_npy
from mining.index import (
    IndexConfig,
    as_f32,
    build_index,
    check_not_empty,
    check_shards,
    load_index,
    save_index,
    set_threads,
)
from mt.common.errors import UserError
from mt.common.files import (
    atomic_write,
    file_identity,
    refuse_file_in_the_way,
)
from mt.common.flags import arg

KNN_FORMAT = "nllb-mini-knn/1"
DIRECTIONS = {"src2tgt": ("src", "tgt"), "tgt2src": ("tgt", "src")}


# --------------------------------------------------------------------------------------------------
# k-NN search


@dataclass
class KnnConfig:
    """How ``mine-knn`` searches one query set against one index (k, nprobe, batch_size are flags)."""

    k: int = arg(4, "neighbours per query")  # as LASER / stopes
    # IVF lists visited per query (None: the index's own, 1 by default)
    nprobe: int | None = arg(None, "IVF lists visited per query (IVF indexes only)")
    batch_size: int = arg(16_384, "queries searched at a time")  # query rows converted to float32 at a time
    gpu: bool | None = None
    threads: int = 0  # the --threads of IndexConfig


def knn_files(prefix: str | os.PathLike, shard: int) -> tuple[Path, Path, Path]:
    base = f"{prefix}.{shard:04d}"
    return Path(f"{base}.ids.npy"), Path(f"{base}.sims.npy"), Path(f"{base}.avg.npy")


def knn_meta_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.meta.json")


def neighbour_mean(sims: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mean similarity to the neighbours actually found (FAISS pads with id -1 when it finds fewer)."""
    valid = ids >= 0
    total = np.where(valid, sims, 0.0).sum(axis=1, dtype=np.float64)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return avg.astype(np.float32)


def _check_query(index, emb: EmbeddingSet, k: int, index_path: object) -> None:
    """The query set and the index come from one encoder, and the index holds at least k vectors."""
    if index.d != emb.dim:
        raise UserError(
            f"{emb.prefix}: embeddings have dim {emb.dim} but the index {index_path} has dim {index.d}: "
            "both sides must come from the same encoder"
        )
    _check_k(index, k, index_path)


def _check_k(index, k: int, where: object) -> None:
    if k < 1:
        raise UserError(f"--k must be at least 1 (got {k})")
    if k > index.ntotal:
        raise UserError(
            f"{where}: k={k} is larger than the index ({index.ntotal} vectors); use --k {index.ntotal} or less, "
            "or index more sentences"
        )


def search_shard(index, rows: np.ndarray, k: int, batch_size: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Search float16/32 ``rows`` against ``index``: (ids int64 [n, k], sims float32 [n, k])."""
    n = rows.shape[0]
    ids = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    for lo in range(0, n, batch_size):
        q = as_f32(rows[lo : lo + batch_size])
        d, i = index.search(q, k)
        sims[lo : lo + q.shape[0]] = d
        ids[lo : lo + q.shape[0]] = i
    sims[ids < 0] = -np.inf
    return ids, sims


def shard_done(out_prefix: str | os.PathLike, shard: int, rows: int, k: int) -> bool:
    """True when shard ``shard`` of a k-NN result exists with the expected shape (so a re-run skips it)."""
    ids_p, sims_p, avg_p = knn_files(out_prefix, shard)
    return sims_p.is_file() and npy_matches(ids_p, (rows, k)) and npy_matches(avg_p, (rows,))


_INDEX_CACHE: dict[tuple, object] = {}


def _cached_index(path: str, nprobe: int | None, gpu: bool | None):
    """One loaded index per worker process: jobs of the same direction reuse it."""
    st = os.stat(path)
    key = (str(path), st.st_mtime_ns, st.st_size, nprobe, gpu)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = load_index(path, nprobe=nprobe, gpu=gpu)
    return _INDEX_CACHE[key]


def knn_shard_job(index_path: str, query_prefix: str, shard: int, out_prefix: str, cfg: KnnConfig) -> dict:
    """One unit of work (what a launcher runs): search query shard ``shard`` and write its three files.

    Skips the shard when its files are already there; returns ``{"shard", "rows", "seconds", "skipped"}``.
    """
    t0 = time.time()
    emb = EmbeddingSet.open(query_prefix)
    rows = emb.meta["shards"][shard]["rows"]
    if shard_done(out_prefix, shard, rows, cfg.k):
        return {"shard": shard, "rows": rows, "seconds": 0.0, "skipped": True}
    set_threads(cfg.threads)
    index = _cached_index(index_path, cfg.nprobe, cfg.gpu)
    _check_query(index, emb, cfg.k, index_path)
    ids, sims = search_shard(index, emb.shard(shard), cfg.k, cfg.batch_size)
    ids_p, sims_p, avg_p = knn_files(out_prefix, shard)
    save_npy(sims_p, sims)
    save_npy(ids_p, ids)
    save_npy(avg_p, neighbour_mean(sims, ids))  # written last: its presence marks the shard finished
    return {"shard": shard, "rows": rows, "seconds": time.time() - t0, "skipped": False}


def write_knn_meta(
    out_prefix: str | os.PathLike,
    query: EmbeddingSet,
    index_path: str | os.PathLike,
    cfg: KnnConfig,
    ntotal: int,
    **info: object,
) -> Path:
    """Check every shard is finished, then write the meta file that makes the result usable."""
    shards = []
    for s, info_s in enumerate(query.meta["shards"]):
        if not shard_done(out_prefix, s, info_s["rows"], cfg.k):
            raise UserError(f"{out_prefix}: shard {s} is missing or incomplete; re-run mine-knn to finish it")
        shards.append({"start": info_s["start"], "rows": info_s["rows"]})
    # absolute paths: mine-bitext finds the embeddings (and through them the texts) from any directory
    meta = {
        "format": KNN_FORMAT,
        "k": cfg.k,
        "queries": str(Path(query.prefix).resolve()),
        "index": str(Path(index_path).resolve()),
        "nprobe": cfg.nprobe,
        "ntotal": int(ntotal),
        "total": len(query),
        **info,
        "shards": shards,
    }
    path = knn_meta_path(out_prefix)
    with atomic_write(path) as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)
    return path


def knn_search(
    index_path: str | os.PathLike,
    query_prefix: str | os.PathLike,
    out_prefix: str | os.PathLike,
    cfg: KnnConfig | None = None,
    launcher=None,
    progress: bool = True,
    **info: object,
) -> Path:
    """Search every shard of ``query_prefix`` against ``index_path`` (skipping finished shards).

    ``launcher``: a ``mining.launcher.Launcher`` to run shards as separate jobs; None runs them here.
    Returns the meta path of the result.
    """
    from mining.launcher import Launcher

    cfg = cfg or KnnConfig()
    query = EmbeddingSet.open(query_prefix)
    check_not_empty(query, "query")
    index = _cached_index(str(index_path), cfg.nprobe, cfg.gpu)
    _check_query(index, query, cfg.k, index_path)
    ntotal = int(index.ntotal)
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(index_path), str(query_prefix), s, str(out_prefix), cfg)
        for s, si in enumerate(query.meta["shards"])
        if not shard_done(out_prefix, s, si["rows"], cfg.k)
    ]
    launcher = launcher or Launcher()
    if not launcher.in_process:
        _INDEX_CACHE.clear()  # the workers load their own copy; do not hold one here too
    launcher.map(knn_shard_job, jobs, desc=f"knn {Path(out_prefix).name}", progress=progress)
    return write_knn_meta(out_prefix, query, index_path, cfg, ntotal, **info)


def _check_knn_meta(mp: Path, meta: dict) -> None:
    """The keys the readers use are there and add up; a hand-edited or foreign meta file is an error here,
    not a KeyError in the middle of mining."""
    try:
        k, total = int(meta["k"]), int(meta["total"])
        shards = [(int(s["start"]), int(s["rows"])) for s in meta["shards"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{mp}: malformed meta file ({type(exc).__name__} {exc}); re-run mine-knn") from None
    rows = sum(n for _, n in shards)
    if k < 1 or rows != total:
        raise UserError(f"{mp}: malformed meta file (k={k}, total {total}, shards of {rows} rows); re-run mine-knn")


@dataclass
class KnnSet:
    """Read side of a k-NN result: per-shard arrays and the per-query neighbourhood means."""

    prefix: Path
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, prefix: str | os.PathLike) -> "KnnSet":
        mp = knn_meta_path(prefix)
        meta = read_meta(mp, KNN_FORMAT, "k-NN result", "mine-knn")
        _check_knn_meta(mp, meta)
        return cls(Path(prefix), meta)

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    def __len__(self) -> int:
        return int(self.meta["total"])

    def shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, sims) of shard ``s``, checked against the meta file."""
        ids_p, sims_p, _ = knn_files(self.prefix, s)
        rows = self.meta["shards"][s]["rows"]
        for p in (ids_p, sims_p):
            if not p.is_file():
                raise UserError(f"{p}: k-NN shard missing (listed in {knn_meta_path(self.prefix)}); re-run mine-knn")
        ids, sims = load_npy(ids_p, "mine-knn", mmap=False), load_npy(sims_p, "mine-knn", mmap=False)
        if ids.shape != (rows, self.k) or sims.shape != (rows, self.k):
            raise UserError(
                f"{ids_p}: shape {ids.shape} does not match the meta file ({rows}, {self.k}): "
                "the shard comes from another run; delete it and re-run mine-knn"
            )
        return ids, sims

    def shards(self):
        """Yield ``(start_row, ids, sims)`` per shard."""
        for s, info in enumerate(self.meta["shards"]):
            ids, sims = self.shard(s)
            yield info["start"], ids, sims

    def averages(self, k: int | None = None) -> np.ndarray:
        """Mean similarity of every query to its first ``k`` neighbours (default: all stored), float32 [n]."""
        k = self.k if k is None else k
        out = np.empty(len(self), dtype=np.float32)
        for s, info in enumerate(self.meta["shards"]):
            lo, hi = info["start"], info["start"] + info["rows"]
            if k == self.k:
                avg = load_npy(knn_files(self.prefix, s)[2], "mine-knn")
                if avg.shape != (hi - lo,):
                    raise UserError(
                        f"{knn_files(self.prefix, s)[2]}: shape {avg.shape} does not match the meta "
                        f"file ({hi - lo},): delete it and re-run mine-knn"
                    )
                out[lo:hi] = avg
            else:
                ids, sims = self.shard(s)
                out[lo:hi] = neighbour_mean(sims[:, :k], ids[:, :k])
        return out


def open_knn_dir(knn_dir: str | os.PathLike) -> tuple[KnnSet | None, KnnSet | None]:
    """The ``(src2tgt, tgt2src)`` results of a ``mine-knn --out-dir`` (None for a direction not run)."""
    kdir = Path(knn_dir)
    fwd, bwd = (KnnSet.open(kdir / d) if knn_meta_path(kdir / d).is_file() else None for d in DIRECTIONS)
    if fwd is None and bwd is None:
        raise UserError(f"{kdir}: no k-NN results (src2tgt.meta.json / tgt2src.meta.json); run mine-knn first")
    return fwd, bwd


# --------------------------------------------------------------------------------------------------
# the two-sided driver used by mine-knn and mine-eval


@dataclass
class MineKnnConfig:
    """Both directions of one language pair: indexes (built when missing) and searches."""

    src_emb: str = arg("", "source embedding set prefix", required=True)
    tgt_emb: str = arg("", "target embedding set prefix", required=True)
    out_dir: str = arg("", "where src2tgt.* / tgt2src.* (and built indexes) go", required=True)
    # default: {out_dir}/src.faiss, built with `index` when missing
    src_index: str | None = arg(None, "index of the source side (default: build {out-dir}/src.faiss)")
    tgt_index: str | None = arg(None, "index of the target side (default: build {out-dir}/tgt.faiss)")
    direction: str = arg(
        "both", "which searches to run (both: as margin scoring needs)", choices=("both", "src2tgt", "tgt2src")
    )
    index: IndexConfig = field(default_factory=IndexConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(DIRECTIONS) if self.direction == "both" else (self.direction,)


def build_index_job(emb_prefix: str, out_path: str, cfg: IndexConfig) -> dict:
    """One launcher job: build and save the index of one embedding set (skipped when the file exists)."""
    if Path(out_path).is_file():
        return {"index": out_path, "skipped": True}
    timings: dict = {}
    index = build_index(EmbeddingSet.open(emb_prefix), cfg, progress=False, timings=timings)
    save_index(index, out_path)
    return {"index": out_path, "ntotal": int(index.ntotal), "skipped": False, **timings}


def _run_identity(cfg: MineKnnConfig, embs: dict[str, EmbeddingSet]) -> dict:
    """What a k-NN output folder is made of: both embedding sets (by the content of the text they embed), the
    index settings and k; a prebuilt index by its content."""
    index = {k: v for k, v in asdict(cfg.index).items() if k != "batch_size"}  # batch_size: speed, not results
    run: dict = {"format": 1, "k": cfg.knn.k, "nprobe": cfg.knn.nprobe, "index": index}
    for side, emb in embs.items():
        run[side] = {k: emb.meta.get(k) for k in ("encoder_spec", "lang", "source", "source_sha256", "total", "dim")}
        prebuilt = cfg.src_index if side == "src" else cfg.tgt_index
        if prebuilt:
            run[f"{side}_index"] = {"path": str(Path(prebuilt).resolve()), **file_identity(prebuilt)}
    return run


def _check_run(out: Path, run: dict) -> None:
    """Record ``run`` in ``out/run.json``, or refuse an ``out`` that holds results of other inputs or settings."""
    path = out / "run.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            old = None
        if old != run:
            what = ", ".join(k for k in run if not isinstance(old, dict) or old.get(k) != run[k]) or "the run"
            raise UserError(
                f"{out} holds k-NN results of other inputs or settings ({what} differ): they would be "
                "reused for these embeddings; choose another --out-dir or delete it"
            )
        return
    if out.is_dir() and any(p.name.endswith((".npy", ".faiss", ".meta.json")) for p in out.iterdir()):
        raise UserError(
            f"{out} holds k-NN results without a run.json saying what they were computed from (an older "
            "mine-knn): choose another --out-dir or delete it"
        )
    with atomic_write(path) as fh:
        json.dump(run, fh, indent=1, ensure_ascii=False)


def mine_knn(cfg: MineKnnConfig, launcher=None, progress: bool = True) -> dict[str, Path]:
    """Build missing indexes, then search each direction; returns ``{direction: result prefix}``."""
    embs = {"src": EmbeddingSet.open(cfg.src_emb), "tgt": EmbeddingSet.open(cfg.tgt_emb)}
    if embs["src"].dim != embs["tgt"].dim:
        raise UserError(
            f"{cfg.src_emb} has dim {embs['src'].dim} but {cfg.tgt_emb} has dim {embs['tgt'].dim}: "
            "embed both sides with the same encoder"
        )
    for side, emb in embs.items():
        check_not_empty(emb, side)
        check_shards(emb)  # a bad shard is reported before anything is built or written
    out = Path(cfg.out_dir)
    refuse_file_in_the_way(out, "--out-dir", folder=True)
    for direction in cfg.directions:
        if direction not in DIRECTIONS:
            raise UserError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")
    paths = {"src": cfg.src_index or str(out / "src.faiss"), "tgt": cfg.tgt_index or str(out / "tgt.faiss")}
    _check_run(out, _run_identity(cfg, embs))  # finished indexes and shards are reused only for the same inputs
    # build the missing indexes first, each as a job (on Slurm, a build is a job like a search shard)
    sides = sorted({DIRECTIONS[d][1] for d in cfg.directions})
    builds = [(str(embs[s].prefix), paths[s], cfg.index) for s in sides if not Path(paths[s]).is_file()]
    if builds:
        from mining.launcher import Launcher

        _INDEX_CACHE.clear()  # one index in memory at a time
        (launcher or Launcher()).map(build_index_job, builds, desc="index", progress=progress)
    result = {}
    for direction in cfg.directions:
        query_side, index_side = DIRECTIONS[direction]
        ipath = paths[index_side]
        prefix = out / direction
        knn_search(
            ipath,
            embs[query_side].prefix,
            prefix,
            cfg.knn,
            launcher=launcher,
            progress=progress,
            direction=direction,
            index_emb=str(Path(embs[index_side].prefix).resolve()),
        )
        result[direction] = prefix
    return result
