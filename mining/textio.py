"""Streaming line I/O for the mining stages: UTF-8 lines in (plain, ``.gz`` or ``-`` for stdin) with a
byte-based progress bar, outputs written atomically (or to stdout for ``-``).

Every stage reads millions of lines, so nothing here holds a file in memory.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
from pathlib import Path
from typing import IO, Iterator

from tqdm import tqdm

from mt.errors import UserError, located
from mt.util import atomic_write


def check_input(path: str | os.PathLike, what: str = "input") -> None:
    """A UserError for a missing or non-file input (``-`` is stdin and always fine)."""
    if str(path) == "-":
        return
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: {what} file not found")
    if not p.is_file():
        raise UserError(f"{p}: {what} is not a regular file")


def read_lines(path: str | os.PathLike, desc: str | None = None, progress: bool = True) -> Iterator[str]:
    """Yield the lines of ``path`` without their line ending, decoded as UTF-8.

    A byte-based tqdm bar (stderr) shows progress and ETA for plain files. A line that is not valid
    UTF-8 is a UserError naming the file and line number.
    """
    check_input(path)
    if str(path) == "-":
        raw: IO[bytes] = sys.stdin.buffer
        total = None
    elif str(path).endswith(".gz"):
        raw = gzip.open(path, "rb")
        total = None
    else:
        raw = open(path, "rb")
        total = os.path.getsize(path)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc or Path(str(path)).name,
               disable=not progress, file=sys.stderr, leave=False)
    try:
        for lineno, b in enumerate(raw, 1):
            bar.update(len(b))
            try:
                line = b.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise located(path, lineno, f"not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                                            "convert the file with iconv -f ENCODING -t UTF-8") from None
            yield line.rstrip("\r\n")
    finally:
        bar.close()
        if raw is not sys.stdin.buffer:
            raw.close()


def count_lines(path: str | os.PathLike) -> int:
    """Number of lines (a last line without newline counts), read in 1 MiB blocks."""
    check_input(path)
    opener = gzip.open if str(path).endswith(".gz") else open
    n = 0
    last = b"\n"
    with opener(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


@contextlib.contextmanager
def open_output(path: str | os.PathLike | None) -> Iterator[IO[str]]:
    """Text output: stdout for ``None``/``-``, otherwise an atomic write (temp file + rename)."""
    if path is None or str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_write(path) as fh:
        yield fh
