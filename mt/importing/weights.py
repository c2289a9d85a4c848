"""Weights of a released checkpoint, read one tensor at a time from memory-mapped files.

Why: the importer builds the new state dict tensor by tensor (fusing q/k/v as it goes), so the only
full copy of the weights in memory is the one being written. The source files are memory-mapped and each
source tensor's pages are given back (``MADV_DONTNEED``, see ``mt.common.pagemem``) as soon as it has
been copied: peak RSS is about one copy of the weights plus the largest tensor, never two copies.

- ``SafetensorsSource``: ``model.safetensors`` or the shards of ``model.safetensors.index.json``. The
  format is an 8-byte little-endian header size, a JSON header ``{name: {dtype, shape, data_offsets}}``
  and the raw data; it is read here with ``mmap`` (no dependency on the safetensors package).
- ``StateDictSource``: a dict of tensors from ``torch.load(..., mmap=True)`` (``pytorch_model.bin`` with
  ``weights_only=True``, fairseq checkpoints through ``mt.importing.safe_pickle``).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import warnings
from pathlib import Path

import torch

from mt.common import pagemem
from mt.common.errors import UserError

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class WeightSource:
    """Named tensors; ``get`` returns a (possibly memory-mapped) view, ``release`` gives its pages back."""

    def keys(self) -> list[str]:
        raise NotImplementedError

    def get(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def file_of(self, name: str) -> Path:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.get(name).shape)

    _maps: list[list] | None = None  # the file mappings, read once (mt-import maps no file while converting)

    def release(self, tensors: list[torch.Tensor]) -> None:
        """Drop the mapped pages behind ``tensors`` from this process (they stay in the page cache)."""
        ranges = [pagemem.tensor_range(t) for t in tensors if t.is_contiguous() and t.numel()]
        if not ranges:
            return
        if self._maps is None or not pagemem.file_backed(ranges, self._maps):
            self._maps = pagemem.joined_file_mappings()
        if pagemem.file_backed(ranges, self._maps):
            pagemem.advise(ranges, pagemem.MADV_DONTNEED)

    def release_files(self, names: list[str]) -> None:
        """Drop every mapped page of the files holding ``names`` from this process (see ``pagemem.drop_file_pages``)."""
        pagemem.drop_file_pages({self.file_of(n) for n in names})

    def __contains__(self, name: str) -> bool:
        return name in set(self.keys())


class StateDictSource(WeightSource):
    def __init__(self, tensors: dict[str, torch.Tensor], files: dict[str, Path]) -> None:
        self.tensors, self.files = tensors, files

    def keys(self) -> list[str]:
        return list(self.tensors)

    def get(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def file_of(self, name: str) -> Path:
        return self.files[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"{path}: not a valid safetensors file ({why}); is the download complete?")


class SafetensorsSource(WeightSource):
    """One or more ``.safetensors`` files (the shards of one model), memory-mapped."""

    def __init__(self, files: list[Path]) -> None:
        self.entries: dict[str, tuple[int, torch.dtype, tuple[int, ...], int, int]] = {}
        self.maps: list[mmap.mmap] = []
        self.paths: list[Path] = []
        for path in files:
            self._open(Path(path))

    def _open(self, path: Path) -> None:
        if not path.is_file():
            raise UserError(f"{path}: weights file not found (listed in the model's index); download it too")
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _bad(path, "shorter than its header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 1 << 28):
                raise _bad(path, f"header size {n} exceeds the file")
            try:
                header = json.loads(fh.read(n))
            except (ValueError, UnicodeDecodeError) as exc:
                raise _bad(path, f"header is not JSON: {exc}") from None
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else None
        if not isinstance(header, dict):
            raise _bad(path, "header is not a JSON object")
        idx = len(self.paths)
        self.paths.append(path)
        self.maps.append(mm)  # type: ignore[arg-type]
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _ST_DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise _bad(path, f"tensor {name!r}: unsupported dtype or malformed entry {info!r}"[:200]) from None
            numel = 1
            for d in shape:
                numel *= d
            if end - begin != numel * dtype.itemsize or begin < 0 or base + end > size:
                raise _bad(path, f"tensor {name!r}: data offsets {begin}..{end} do not fit its shape or the file")
            if name in self.entries:
                raise _bad(path, f"tensor {name!r} is also in {self.paths[self.entries[name][0]]}")
            self.entries[name] = (idx, dtype, shape, base + begin, numel)

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def file_of(self, name: str) -> Path:
        return self.paths[self.entries[name][0]]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][2]

    def get(self, name: str) -> torch.Tensor:
        idx, dtype, shape, offset, numel = self.entries[name]
        if numel == 0:
            return torch.empty(shape, dtype=dtype)
        with warnings.catch_warnings():  # the mapping is read-only; the view is only ever read
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(self.maps[idx], dtype=torch.uint8, count=numel * dtype.itemsize, offset=offset)
        if offset % dtype.itemsize:  # not aligned for its dtype (a tensor after an odd-sized one): copy it
            flat = flat.clone()
        return flat.view(dtype).view(shape)


def open_safetensors(folder: Path) -> SafetensorsSource | None:
    """The safetensors weights of an HF folder (single file or sharded), or None when it has none."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return SafetensorsSource(_index_files(index))
    single = folder / "model.safetensors"
    return SafetensorsSource([single]) if single.is_file() else None


def _index_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{index}: not a valid weight index (expected a 'weight_map' object: {exc})") from None
    for name in names:
        if not isinstance(name, str) or os.sep in name or name.startswith("."):
            raise UserError(f"{index}: weight_map names {name!r}, not a file in this folder")
    return [index.parent / n for n in names]


def open_torch_bin(folder: Path) -> StateDictSource | None:
    """``pytorch_model.bin`` (or its shards), loaded with ``weights_only=True`` and memory-mapped."""
    index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        files = _index_files(index)
    elif (folder / "pytorch_model.bin").is_file():
        files = [folder / "pytorch_model.bin"]
    else:
        return None
    tensors: dict[str, torch.Tensor] = {}
    where: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise UserError(f"{path}: weights file not found (listed in {index.name}); download it too")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for broken or non-tensor files
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"{path}: not a loadable weights file ({reason}); is the download complete?") from None
        if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
            raise UserError(f"{path}: not a state dict of tensors")
        for k, v in sd.items():
            tensors[k], where[k] = v, path
    return StateDictSource(tensors, where)
