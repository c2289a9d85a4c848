"""Sharded sentence-embedding files: fp16 ``.npy`` shards on disk, memory-mapped when read.

Layout for an embedding set with prefix ``P`` (e.g. ``work/emb/deu_Latn``)::

    P.meta.json     {"format": "nllb-mini-embeddings/1", "dim", "dtype": "float16", "total",
                     "encoder", "lang", "source", "source_sha256", "shards": [{"file", "rows", "start"}]}
    P.0000.npy      rows [start, start + rows) of the source, float16 [rows, dim], L2-normalised
    P.0001.npy      ...

``source_sha256``: SHA-256 of the embedded text (after gunzip), so a reader can check that a text file
is the one embedded (sets written before it existed lack it). Shards are written atomically, one at a
time, so a killed job keeps every finished shard; the meta file is written last and lists exactly the
shards that make up the set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from mt.common.errors import UserError
from mt.common.files import atomic_write

FORMAT = "nllb-mini-embeddings/1"


def shard_path(prefix: str | os.PathLike, k: int) -> Path:
    return Path(f"{prefix}.{k:04d}.npy")


def meta_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.meta.json")


def write_shard(prefix: str | os.PathLike, k: int, emb: np.ndarray) -> Path:
    """Write one shard atomically as float16 ``.npy``."""
    return save_npy(shard_path(prefix, k), np.ascontiguousarray(emb, dtype=np.float16))


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """``np.save`` to a temp name, then rename: a killed job never leaves half an array."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, arr)
    return Path(path)


def load_npy(path: str | os.PathLike, producer: str, mmap: bool = True) -> np.ndarray:
    """A ``.npy`` array, memory-mapped by default; never unpickled (allow_pickle stays False: a file must not
    run code). A truncated, foreign or object-dtype file is a UserError naming it and the command that
    rewrites it, instead of numpy's traceback."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        text = str(exc)
        why = (
            "it holds Python objects (a pickle), which are never loaded"
            if "object" in text.lower()
            else f"truncated or not a .npy array ({text.split('. ')[0]})"
        )
        raise UserError(f"{path}: {why}; delete it and re-run {producer}") from None


def npy_matches(path: str | os.PathLike, shape: tuple[int, ...], dtype: object = None) -> bool:
    """True when ``path`` is a readable ``.npy`` of this shape (and dtype): a finished shard to skip."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError):
        return False
    return arr.shape == tuple(shape) and (dtype is None or arr.dtype == np.dtype(dtype))


def read_meta(path: str | os.PathLike, fmt: str, what: str, producer: str) -> dict:
    """The meta file of a sharded set (embeddings, k-NN results), checked: there, JSON, format ``fmt``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found (run {producer} first, or finish the killed run)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: corrupt {what} meta file ({exc}); re-run {producer}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{path}: unknown {what} format {found!r} (expected {fmt}); re-run {producer}")
    return meta


def write_meta(prefix: str | os.PathLike, dim: int, shards: list[dict], **info: object) -> None:
    meta = {
        "format": FORMAT,
        "dim": int(dim),
        "dtype": "float16",
        "total": int(sum(s["rows"] for s in shards)),
        **info,
        "shards": shards,
    }
    with atomic_write(meta_path(prefix)) as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)


def _check_layout(mp: Path, meta: dict) -> None:
    """The keys readers use are there and the shards follow each other from row 0; a hand-edited or
    foreign meta file is a UserError here rather than a KeyError deep inside mine-index."""
    try:
        if int(meta["dim"]) < 0 or int(meta["total"]) < 0:
            raise ValueError("a negative dim or total")
        start = 0
        for k, s in enumerate(meta["shards"]):
            if not isinstance(s["file"], str):
                raise TypeError(f"shard {k} has the file name {s['file']!r}")
            if s["start"] != start:
                raise UserError(f"{mp}: shard {k} starts at row {s['start']}, expected {start}: shards are mismatched")
            start += int(s["rows"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{mp}: malformed meta file ({type(exc).__name__} {exc}); re-run mine-embed") from None


@dataclass
class EmbeddingSet:
    """Read side: ``len()``, ``dim``, shard iteration (memory-mapped) and random row access."""

    prefix: Path
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, prefix: str | os.PathLike) -> "EmbeddingSet":
        mp = meta_path(prefix)
        meta = read_meta(mp, FORMAT, "embedding set", "mine-embed")
        _check_layout(mp, meta)
        return cls(Path(prefix), meta)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return int(self.meta["total"])

    def shard(self, k: int) -> np.ndarray:
        """Shard ``k`` as a read-only float16 memmap, checked against the meta file."""
        info = self.meta["shards"][k]
        path = self.prefix.parent / info["file"]
        if not path.is_file():
            raise UserError(f"{path}: embedding shard missing (listed in {meta_path(self.prefix)})")
        arr = load_npy(path, "mine-embed")
        if arr.ndim != 2 or arr.shape[1] != self.dim or arr.shape[0] != info["rows"]:
            raise UserError(
                f"{path}: shape {arr.shape} does not match the meta file (rows={info['rows']}, dim={self.dim}); "
                "the shard comes from another run: delete it and re-run mine-embed"
            )
        return arr

    def shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, float16 memmap)`` per shard."""
        for k, info in enumerate(self.meta["shards"]):
            yield info["start"], self.shard(k)

    def load(self) -> np.ndarray:
        """All rows as one float32 array (only for sets that fit in memory)."""
        if not self.meta["shards"]:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(a, dtype=np.float32) for _, a in self.shards()])
