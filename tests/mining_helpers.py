"""Small builders shared by the mining tests: embedding sets and k-NN result files written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mining.embedding_store import write_meta, write_shard


def write_emb(prefix: Path, arr: np.ndarray, shard_rows: int | None = None, **info) -> Path:
    """Write ``arr`` (rows L2-normalised here) as an embedding set cut into shards of ``shard_rows``."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.shape[0]:
        arr = arr / np.linalg.norm(arr, axis=1, keepdims=True)
    shard_rows = shard_rows or max(1, arr.shape[0])
    shards = []
    for k, lo in enumerate(range(0, arr.shape[0], shard_rows)):
        write_shard(prefix, k, arr[lo : lo + shard_rows])
        shards.append(
            {"file": f"{prefix.name}.{k:04d}.npy", "rows": int(arr[lo : lo + shard_rows].shape[0]), "start": lo}
        )
    write_meta(prefix, arr.shape[1] if arr.ndim == 2 else 0, shards, **info)
    return prefix


def clustered(n: int, dim: int, seed: int, centers: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim))
    x = c[rng.integers(0, centers, n)] + 0.7 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_knn(prefix: Path, ids: np.ndarray, sims: np.ndarray, ntotal: int, shard_rows: int | None = None) -> Path:
    """A k-NN result in mine-knn's layout, from hand-made neighbour lists (the test's own fixture)."""
    ids, sims = np.asarray(ids, dtype=np.int64), np.asarray(sims, dtype=np.float32)
    n, k = ids.shape
    shard_rows = shard_rows or n
    shards = []
    for s, lo in enumerate(range(0, n, shard_rows)):
        hi = min(n, lo + shard_rows)
        base = f"{prefix}.{s:04d}"
        np.save(f"{base}.ids.npy", ids[lo:hi])
        np.save(f"{base}.sims.npy", sims[lo:hi])
        valid = ids[lo:hi] >= 0
        avg = np.where(valid, sims[lo:hi], 0).sum(1) / np.maximum(valid.sum(1), 1)
        np.save(f"{base}.avg.npy", avg.astype(np.float32))
        shards.append({"start": lo, "rows": hi - lo})
    meta = {
        "format": "nllb-mini-knn/1",
        "k": k,
        "queries": "",
        "index": "",
        "nprobe": None,
        "ntotal": ntotal,
        "total": n,
        "shards": shards,
    }
    Path(f"{prefix}.meta.json").write_text(json.dumps(meta))
    return prefix
