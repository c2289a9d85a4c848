"""fairseq's memory-mapped ``.bin/.idx`` dataset format (MMapIndexedDataset), O(1) random access.

``.idx``: magic ``MMIDIDX\\x00\\x00``, version (u64 = 1), dtype code (u8), number of items (u64),
number of doc indices (u64), then ``sizes`` (int32), ``pointers`` (int64 byte offsets) and ``doc_idx``
(int64). ``.bin``: the token ids back to back. Files written here open in fairseq and vice versa.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mt.common.errors import UserError
from mt.common.files import remove_stale_temps, temp_name

_MAGIC = b"MMIDIDX\x00\x00"
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float64, 8: np.uint16}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items() if k != 6}


def best_dtype(vocab_size: int) -> np.dtype:
    """uint16 while ids fit (as fairseq does), int32 beyond."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def dataset_exists(prefix: str | os.PathLike) -> bool:
    return Path(f"{prefix}.idx").is_file() and Path(f"{prefix}.bin").is_file()


class IndexedDatasetWriter:
    """Append token-id sequences, then ``finalize()``. Writes to temp names; renames both at the end."""

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype | type = np.uint16) -> None:
        self.prefix = Path(prefix)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODES:
            raise ValueError(f"unsupported dtype {self.dtype}")
        remove_stale_temps(self.prefix.parent, f".{self.prefix.name}.")  # a killed run's full-size leftovers
        self._tmp_bin = self.prefix.with_name(temp_name(f"{self.prefix.name}.bin"))
        self._bin = open(self._tmp_bin, "wb")
        self.sizes: list[int] = []

    def add(self, ids: Sequence[int] | np.ndarray) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self._bin.write(arr.tobytes(order="C"))
        self.sizes.append(arr.size)

    def add_many(self, seqs: Iterable[Sequence[int]]) -> None:
        for s in seqs:
            self.add(s)

    def add_dataset(self, prefix: str | os.PathLike) -> None:
        """Append every item of a finished dataset (fairseq's ``merge_file_``): bytes copied in bulk."""
        other = IndexedDataset(prefix)
        if other.dtype != self.dtype:
            raise ValueError(f"cannot merge {prefix} ({other.dtype}) into a {self.dtype} dataset")
        self.sizes.extend(other.sizes.tolist())
        del other
        with open(f"{prefix}.bin", "rb") as fh:
            shutil.copyfileobj(fh, self._bin)

    def finalize(self) -> None:
        self._bin.close()
        sizes = np.asarray(self.sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        if len(sizes) > 1:
            np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
        tmp_idx = self.prefix.with_name(temp_name(f"{self.prefix.name}.idx"))
        with open(tmp_idx, "wb") as fh:
            fh.write(_MAGIC)
            fh.write(struct.pack("<Q", 1))
            fh.write(struct.pack("<B", _CODES[self.dtype]))
            fh.write(struct.pack("<Q", len(sizes)))
            fh.write(struct.pack("<Q", len(doc_idx)))
            fh.write(sizes.tobytes(order="C"))
            fh.write(pointers.tobytes(order="C"))
            fh.write(doc_idx.tobytes(order="C"))
        # .bin first: a reader only opens a dataset whose .idx exists, and .idx lands last.
        os.replace(self._tmp_bin, f"{self.prefix}.bin")
        os.replace(tmp_idx, f"{self.prefix}.idx")

    def abort(self) -> None:
        self._bin.close()
        self._tmp_bin.unlink(missing_ok=True)

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


class IndexedDataset:
    """Read-only, memory-mapped view: ``ds[i]`` is a numpy int64 array, ``ds.sizes`` all lengths."""

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = Path(prefix)
        idx_path, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
        if not idx_path.is_file() or not bin_path.is_file():
            raise UserError(f"{prefix}.{{idx,bin}}: binarized dataset not found (run mt-preprocess first)")
        with open(idx_path, "rb") as fh:
            magic = fh.read(9)
            if magic != _MAGIC:
                raise UserError(f"{idx_path}: not a fairseq mmap index (bad magic {magic!r}); re-run mt-preprocess")
            (version,) = struct.unpack("<Q", fh.read(8))
            if version != 1:
                raise UserError(f"{idx_path}: unsupported index version {version}")
            (code,) = struct.unpack("<B", fh.read(1))
            self.dtype = np.dtype(_DTYPES[code])
            (n,) = struct.unpack("<Q", fh.read(8))
            (ndoc,) = struct.unpack("<Q", fh.read(8))
            offset = fh.tell()
        idx_buf = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(idx_buf, dtype=np.int32, count=n, offset=offset)
        self.pointers = np.frombuffer(idx_buf, dtype=np.int64, count=n, offset=offset + self.sizes.nbytes)
        expected = int(self.sizes.astype(np.int64).sum()) * self.dtype.itemsize
        if bin_path.stat().st_size != expected:
            raise UserError(
                f"{bin_path}: size {bin_path.stat().st_size} bytes does not match its index ({expected}); "
                "the data is truncated or from another run: re-run mt-preprocess"
            )
        self._bin = np.memmap(bin_path, mode="r", dtype=self.dtype) if expected else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.sizes):
            raise IndexError(f"index {i} out of range for {self.prefix} ({len(self.sizes)} items)")
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self._bin[start : start + int(self.sizes[i])], dtype=np.int64)
