"""Input files of batch translation jobs, read as one stream of records, never whole into memory.

Formats (``--format auto`` picks by extension; ``.gz`` works for the line-based ones):

- ``text`` (``.txt`` and anything else): one sentence per line, split on ``\\n`` only (a trailing
  ``\\r`` is dropped), so record counts equal ``wc -l`` (+1 for a last line without newline);
- ``tsv`` (``.tsv``): the ``--column`` N-th field (1-based, as ``cut -f``) of each line;
- ``jsonl`` (``.jsonl``, ``.ndjson``): the string ``--field`` of the object on each line;
- ``parquet`` (``.parquet``): the string column ``--column NAME``, row by row (pyarrow record batches).

Every line / row is one record, good or bad: a bad one (invalid UTF-8, missing column or field, broken
JSON, null) carries a ``reason`` instead of text, so outputs stay line-aligned with inputs. A leading
UTF-8 byte-order mark is dropped (it would otherwise be translated as part of the first record). Directories
are read recursively in sorted order of their relative paths; hidden files and folders are skipped.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

from mt.common.errors import UserError
from mt.common.textio import count_lines

FORMATS = ("text", "tsv", "jsonl", "parquet")
_EXT = {".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class InputFile:
    path: Path
    rel: str  # name relative to the input argument it came from (its basename for a file argument)
    fmt: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class Record:
    text: str | None  # None for a bad record
    reason: str  # "" when good, else why it is bad
    file: int  # index into the job's InputFile list
    line: int  # 1-based line (text, tsv, jsonl) or row (parquet) number in its file


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffixes = path.suffixes
    ext = (
        suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    )
    return _EXT.get(ext.lower(), "text")


def list_inputs(
    paths: Sequence[str | os.PathLike], fmt: str = "auto", exclude: str | os.PathLike | None = None
) -> list[InputFile]:
    """Files to read, in order: arguments as given, each directory expanded recursively and sorted.

    ``exclude``: a folder never read (the job's output folder, should it sit inside an input folder).
    """
    skip = Path(exclude).resolve() if exclude else None
    if fmt not in ("auto", *FORMATS):
        raise UserError(f"--format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    out: list[InputFile] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = [d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).resolve() != skip]
                for name in filenames:
                    if not name.startswith("."):
                        f = Path(dirpath) / name
                        found.append((f.relative_to(p).as_posix(), f))
            if not found:
                raise UserError(f"{p}: input directory holds no files")
            out += [InputFile(f, rel, detect_format(f, fmt)) for rel, f in sorted(found)]
        elif p.is_file():
            out.append(InputFile(p, p.name, detect_format(p, fmt)))
        else:
            raise UserError(f"{p}: no such input file or directory")
    rels = [f.rel for f in out]
    dup = sorted({r for r in rels if rels.count(r) > 1})
    if dup:
        raise UserError(f"two inputs have the same name {dup[0]!r}: outputs are named after inputs, so rename one")
    return out


def _open_bytes(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


BOM = b"\xef\xbb\xbf"


def strip_bom(first_line: bytes) -> bytes:
    """A file's first line without the UTF-8 byte-order mark some editors write (it is not text)."""
    return first_line[len(BOM) :] if first_line.startswith(BOM) else first_line


def _lines(path: Path) -> Iterator[bytes]:
    with _open_bytes(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield strip_bom(raw) if lineno == 1 else raw


def _decode(raw: bytes) -> tuple[str | None, str]:
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as exc:
        return None, f"invalid-utf8 (byte {exc.start})"


def _parquet_column(f: InputFile, column: str | None):
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise UserError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(f.path)
    except Exception as exc:
        raise UserError(f"{f.path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if column is None:
        raise UserError(f"{f.path}: say which Parquet column to translate with --column (columns: {', '.join(names)})")
    if column not in names:
        raise UserError(f"{f.path}: no column {column!r} (columns: {', '.join(names)}); pass --column NAME")
    return pf


def iter_file(f: InputFile, index: int, column: str | None = None, field: str | None = None) -> Iterator[Record]:
    """Records of one file (see module docstring)."""
    if f.fmt == "parquet":
        pf = _parquet_column(f, column)
        row = 0
        for batch in pf.iter_batches(columns=[column], batch_size=4096):
            for value in batch.column(0).to_pylist():
                row += 1
                if value is None:
                    yield Record(None, "null", index, row)
                elif isinstance(value, bytes):
                    text, reason = _decode(value)
                    yield Record(text, reason, index, row)
                else:
                    yield Record(str(value), "", index, row)
        return
    col = None
    if f.fmt == "tsv":
        try:
            col = int(column) if column is not None else None
        except ValueError:
            raise UserError(
                f"--column {column!r}: for TSV input give the 1-based field number, e.g. --column 2"
            ) from None
        if col is None or col < 1:
            raise UserError(f"{f.path}: TSV input needs --column N (1-based field number, as cut -f)")
    if f.fmt == "jsonl" and not field:
        raise UserError(f"{f.path}: JSONL input needs --field NAME (the key holding the text)")
    for lineno, raw in enumerate(_lines(f.path), 1):
        text, reason = _decode(raw)
        if text is None:
            yield Record(None, reason, index, lineno)
        elif f.fmt == "tsv":
            parts = text.split("\t")
            if len(parts) < col:
                yield Record(None, f"missing-column {col} (line has {len(parts)})", index, lineno)
            else:
                yield Record(parts[col - 1], "", index, lineno)
        elif f.fmt == "jsonl":
            try:
                obj = json.loads(text)
            except ValueError:
                yield Record(None, "bad-json", index, lineno)
                continue
            value = obj.get(field) if isinstance(obj, dict) else None
            if value is None:
                yield Record(None, f"missing-field {field}", index, lineno)
            elif not isinstance(value, str):
                yield Record(None, f"field {field} is not a string", index, lineno)
            else:
                yield Record(value, "", index, lineno)
        else:
            yield Record(text, "", index, lineno)


def iter_records(files: Sequence[InputFile], column: str | None = None, field: str | None = None) -> Iterator[Record]:
    for i, f in enumerate(files):
        yield from iter_file(f, i, column, field)


def count_records(f: InputFile, column: str | None = None) -> int:
    """Records in a file without decoding them (a fast pass: newline count, or Parquet metadata)."""
    if f.fmt == "parquet":
        return _parquet_column(f, column).metadata.num_rows
    return count_lines(f.path, check_utf8=False)  # a bad line is a record too: mt-translate copies it through
