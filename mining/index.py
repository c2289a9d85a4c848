"""FAISS indexes over sharded embeddings (``mine-index``); the k-NN search over them is ``mining.knn``.

Index: ``faiss.index_factory(dim, FACTORY, METRIC_INNER_PRODUCT)`` on L2-normalised vectors (inner
product = cosine), trained on a random sample of ``--train-sample`` rows, filled shard by shard, written
atomically with ``faiss.write_index``. On a machine with GPUs (``faiss.get_num_gpus() > 0``, faiss-gpu
installed) the same code moves the index to all GPUs. Memory is bounded by the index plus one batch of
rows, whatever the corpus.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mining.embedding_store import EmbeddingSet, meta_path
from mt.common.errors import UserError
from mt.common.files import (
    refuse_file_in_the_way,
    refuse_overwriting_input,
    remove_stale_temps,
    temp_name,
)
from mt.common.flags import arg


def faiss_module():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise UserError("faiss is not installed: pip install faiss-cpu (or faiss-gpu on a GPU machine)") from None
    return faiss


def faiss_threads(threads: int) -> int:
    """The OpenMP threads faiss uses for ``--threads`` (0: its default, all cores)."""
    return threads if threads > 0 else faiss_module().omp_get_max_threads()


def num_gpus() -> int:
    faiss = faiss_module()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


# --------------------------------------------------------------------------------------------------
# index building


@dataclass
class IndexConfig:
    """How ``mine-index`` builds one side's index (each field but gpu is also its flag)."""

    factory: str = arg("Flat", "FAISS index factory string")
    train_sample: int = arg(262_144, "rows sampled to train IVF/PQ indexes")  # capped at the set size
    seed: int = arg(0, "seed of the training sample")
    # rows converted to float32 and added at a time; PQ encoding needs a 64 KiB distance table per row
    # (M x 256 floats for PQ64), so 8192 rows cost ~0.5 GiB transient memory, 65536 would cost 4 GiB
    batch_size: int = arg(8_192, "rows added at a time")
    gpu: bool | None = None  # None: use GPUs when faiss sees any (flags: FaissDevice)
    threads: int = arg(0, "faiss CPU threads (default: all cores)", show_default=False)  # 0: faiss default


@dataclass
class FaissDevice:
    """``--gpu`` / ``--cpu``: the ``gpu`` setting of IndexConfig and KnnConfig (neither: GPUs when visible)."""

    gpu: bool = arg(False, "require GPUs (faiss-gpu)", exclusive="device")
    cpu: bool = arg(False, "stay on CPU even when GPUs are visible", exclusive="device")

    def setting(self) -> bool | None:
        return True if self.gpu else False if self.cpu else None


@dataclass
class IndexJob:
    """One ``mine-index`` run: the embedding set, the index file and how to build it."""

    emb: str = arg(help="embedding set prefix (written by mine-embed)", required=True)
    out: str | None = arg(None, "index file (default: {emb}.faiss)")
    force: bool = arg(False, "rebuild even when the index file exists")
    config: IndexConfig = field(default_factory=IndexConfig)


def as_f32(rows: np.ndarray) -> np.ndarray:
    """float16 rows -> contiguous float32, re-normalised (fp16 rounding moves norms by ~1e-3)."""
    x = np.ascontiguousarray(rows, dtype=np.float32)
    faiss_module().normalize_L2(x)
    return x


def _sample_rows(emb: EmbeddingSet, n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn uniformly without replacement across all shards, as float32."""
    total = len(emb)
    n = min(n, total)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=n, replace=False)) if n < total else np.arange(total)
    out = np.empty((n, emb.dim), dtype=np.float32)
    pos = 0
    for start, arr in emb.shards():
        lo, hi = np.searchsorted(pick, [start, start + arr.shape[0]])
        if hi > lo:
            out[pos : pos + hi - lo] = arr[pick[lo:hi] - start]
            pos += hi - lo
    faiss_module().normalize_L2(out)
    return out


def check_not_empty(emb: EmbeddingSet, what: str) -> None:
    if len(emb) == 0:
        raise UserError(f"{emb.prefix}: the {what} embedding set is empty (0 rows); nothing to index or search")


def check_shards(emb: EmbeddingSet) -> None:
    """Open every shard (a memory map: no data is read) so that a truncated or foreign shard is reported,
    naming it, before an index or a search writes anything."""
    for k in range(len(emb.meta["shards"])):
        emb.shard(k)


def set_threads(threads: int) -> None:
    if threads and threads > 0:
        faiss_module().omp_set_num_threads(int(threads))


def new_index(dim: int, factory: str):
    faiss = faiss_module()
    try:
        index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
        raise UserError(
            f"bad FAISS factory string {factory!r} for dim {dim} ({msg}); "
            "examples: Flat, IVF4096,Flat, IVF4096,PQ64, OPQ64,IVF65536,PQ64 (PQ m must divide the dim)"
        ) from None
    # index_factory turns on polysemous training for PQ codes: a slow annealing step (10x the PQ training
    # time) whose only use is Hamming pre-filtering of L2 searches, never used for inner product here
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    return index


def build_index(emb: EmbeddingSet, cfg: IndexConfig | None = None, progress: bool = True, timings: dict | None = None):
    """Train (on a sample) and fill a CPU index from ``emb`` shard by shard; returns the faiss index.

    ``timings``, when given, receives ``train_s`` and ``add_s``.
    """
    from tqdm import tqdm

    cfg = cfg or IndexConfig()
    timings = {} if timings is None else timings
    timings["train_s"] = 0.0
    check_not_empty(emb, "indexed")
    set_threads(cfg.threads)
    index = new_index(emb.dim, cfg.factory)
    if not index.is_trained:
        sample = _sample_rows(emb, cfg.train_sample, cfg.seed)
        ivf = faiss_module().extract_index_ivf(index) if "IVF" in cfg.factory else None
        if ivf is not None and sample.shape[0] < ivf.nlist:
            raise UserError(
                f"{emb.prefix}: {cfg.factory} has {ivf.nlist} lists but only {sample.shape[0]} training rows "
                f"(set has {len(emb)}): use fewer lists, e.g. IVF{max(1, int(4 * np.sqrt(len(emb))))},Flat, or Flat"
            )
        if ivf is not None and cfg.gpu is not False and num_gpus() > 0:
            # k-means of the coarse quantizer on the GPUs, the index itself stays a CPU one (FAISS's recipe)
            ivf.clustering_index = faiss_module().index_cpu_to_all_gpus(faiss_module().IndexFlatL2(ivf.d))
        t0 = time.time()
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise UserError(
                f"{emb.prefix}: training {cfg.factory} failed: {str(exc).strip().splitlines()[-1]}"
            ) from None
        timings["train_s"] = time.time() - t0
        if progress:
            print(
                f"mine-index: trained {cfg.factory} on {sample.shape[0]} rows in {timings['train_s']:.1f}s",
                file=sys.stderr,
            )
        del sample
    t0 = time.time()
    bar = tqdm(total=len(emb), unit="vec", desc=f"add {Path(emb.prefix).name}", disable=not progress, file=sys.stderr)
    for _, arr in emb.shards():
        for lo in range(0, arr.shape[0], cfg.batch_size):
            block = as_f32(arr[lo : lo + cfg.batch_size])
            index.add(block)
            bar.update(block.shape[0])
    bar.close()
    timings["add_s"] = time.time() - t0
    return index


def to_gpu_if_available(index, gpu: bool | None = None):
    """Move ``index`` to all GPUs when asked (``gpu=True``) or when any is visible (``gpu=None``)."""
    faiss = faiss_module()
    n = num_gpus()
    if gpu is False or n == 0:
        if gpu:
            raise UserError("--gpu asked but faiss sees no GPU (install faiss-gpu and check CUDA_VISIBLE_DEVICES)")
        return index
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True  # split the database across GPUs, not replicate it
    co.useFloat16 = True
    return faiss.index_cpu_to_all_gpus(index, co=co)


def save_index(index, path: str | os.PathLike) -> Path:
    """``faiss.write_index`` to a temp name beside ``path``, then rename (a killed run leaves no half index)."""
    faiss = faiss_module()
    path = Path(path)
    if hasattr(faiss, "index_gpu_to_cpu") and num_gpus() > 0:
        try:
            index = faiss.index_gpu_to_cpu(index)
        except (RuntimeError, AttributeError):
            pass  # already a CPU index
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, f".{path.name}.")  # a killed build's full-size leftovers
    tmp = path.with_name(temp_name(path.name))
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    except RuntimeError as exc:  # faiss reports a failed write (a full disk) as a RuntimeError
        raise UserError(
            f"{path}: writing the index failed ({str(exc).strip().splitlines()[-1]}); free space or "
            "choose another --out, and re-run"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_index(path: str | os.PathLike, nprobe: int | None = None, gpu: bool | None = None):
    """Read an index written by ``save_index``; set ``nprobe`` for IVF indexes; move to GPUs if any."""
    faiss = faiss_module()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FAISS index not found (build it with mine-index)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise UserError(
            f"{path}: not a readable FAISS index ({str(exc).strip().splitlines()[-1]}); rebuild it with mine-index"
        ) from None
    set_nprobe(index, nprobe)
    return to_gpu_if_available(index, gpu)


def set_nprobe(index, nprobe: int | None) -> None:
    """Set ``nprobe`` on the IVF part of any index chain (OPQ,IVF,PQ...); a no-op for flat indexes."""
    if nprobe is None:
        return
    faiss = faiss_module()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return  # no IVF level: exhaustive search, nprobe means nothing
    ivf.nprobe = int(nprobe)
    # An HNSW coarse quantizer (IVF65536_HNSW32,...) must find nprobe lists: with its default efSearch (16)
    # it returns poor ones once nprobe nears it, so keep the beam at least twice nprobe.
    quantizer = faiss.downcast_index(ivf.quantizer)
    if hasattr(quantizer, "hnsw"):
        quantizer.hnsw.efSearch = max(quantizer.hnsw.efSearch, 2 * int(nprobe))


def run_index(job: IndexJob) -> Path | None:
    """``mine-index``: build and save the index of ``job.emb``; None when it exists (and not ``force``)."""
    cfg = job.config
    out = Path(job.out or f"{job.emb}.faiss")
    if out.is_file() and not job.force:
        print(f"mine-index: {out} exists, skipping (--force to rebuild)", file=sys.stderr)
        return None
    emb = EmbeddingSet.open(job.emb)
    shards = {f"--emb shard {k}": emb.prefix.parent / s["file"] for k, s in enumerate(emb.meta["shards"])}
    refuse_overwriting_input({"--emb": meta_path(job.emb), **shards}, out, "--out")
    refuse_file_in_the_way(out, "--out")
    check_shards(emb)
    t0 = time.time()
    index = build_index(emb, cfg)
    save_index(index, out)
    print(
        f"mine-index: {out} ({cfg.factory}, {index.ntotal} vectors, dim {index.d}) in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )
    return out
