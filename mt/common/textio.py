"""Streaming line I/O for the mining stages: UTF-8 lines in (plain, ``.gz`` or ``-`` for stdin) with a
byte-based progress bar, outputs written atomically (or to stdout for ``-``).

Every stage reads millions of lines, so nothing here holds a file in memory.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import os
import sys
from pathlib import Path
from typing import IO, Iterable, Iterator

from tqdm import tqdm

from mt.common.errors import UserError, located
from mt.common.files import atomic_write, refuse_file_in_the_way, refuse_overwriting_input, same_file, scan_text


def check_input(path: str | os.PathLike, what: str = "input") -> None:
    """A UserError for a missing or non-file input (``-`` is stdin and always fine)."""
    if str(path) == "-":
        return
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: {what} file not found")
    if not p.is_file():
        raise UserError(f"{p}: {what} is not a regular file")


def check_outputs(inputs: dict[str, str | os.PathLike | None], outputs: dict[str, str | os.PathLike | None]) -> None:
    """Before any work: refuse an output that names an input (``--output`` equal to ``--input`` would replace
    the input with the result), two outputs that name one file (one would silently replace the other), and
    an output that cannot be written because a file stands where a folder belongs. ``{flag: path}``; None
    and ``-`` (stdin/stdout) are skipped."""
    inputs = {flag: path for flag, path in inputs.items() if path is not None and str(path) != "-"}
    seen: dict[str, str | os.PathLike] = {}
    for flag, path in outputs.items():
        if path is None or str(path) == "-":
            continue
        refuse_overwriting_input(inputs, path, flag)
        for other_flag, other in seen.items():
            if same_file(path, other):
                raise UserError(
                    f"{other_flag} and {flag} are both {path}: one would replace the other; "
                    "give each output its own file"
                )
        refuse_file_in_the_way(path, flag)
        seen[flag] = path


def read_lines(
    path: str | os.PathLike,
    desc: str | None = None,
    progress: bool = True,
    *,
    bom: bool = False,
    strip: str | None = "\r\n",
) -> Iterator[str]:
    """Yield the lines of ``path`` (split on ``\n`` only; plain, ``.gz`` or ``-``), decoded as UTF-8: the one
    line reader of the tree. A last line without a newline counts, as in :func:`count_lines`.

    A byte-based tqdm bar (stderr) shows progress and ETA for plain files. A line that is not valid
    UTF-8 is a UserError naming the file and line number. ``bom``: drop a leading byte-order mark (files
    people edit: hypotheses, references, term lists; Windows editors write one). ``strip``: the characters
    removed from each line's end, the line ending by default; None removes all trailing whitespace, as
    sacrebleu reads hypotheses and references.
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
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=desc or Path(str(path)).name,
        disable=not progress,
        file=sys.stderr,
        leave=False,
    )
    try:
        for lineno, b in enumerate(raw, 1):
            bar.update(len(b))
            try:
                line = b.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise located(
                    path,
                    lineno,
                    f"not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                    "convert the file with iconv -f ENCODING -t UTF-8",
                ) from None
            if bom and lineno == 1:
                line = line.removeprefix("\ufeff")
            yield line.rstrip(strip)
    finally:
        bar.close()
        if raw is not sys.stdin.buffer:
            raw.close()


def chunks(items: Iterable, n: int) -> Iterator[list]:
    """Consecutive lists of ``n`` items (the last one shorter): batches, shards, predict calls."""
    chunk: list = []
    for x in items:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count_lines(path: str | os.PathLike, check_utf8: bool = True) -> int:
    """Lines as :func:`read_lines` yields them (a last line without a newline counts; ``.gz`` read through
    gzip), in one pass of 1 MiB blocks. ``check_utf8``: a line that is not UTF-8 is a UserError naming it,
    so a stage that counts first refuses a bad file before it writes anything (not halfway through)."""
    check_input(path)
    return scan_text(path, check_utf8, digest=False)[0]


def with_line_numbers(lines: Iterable[str], numbers: str | os.PathLike | None) -> Iterator[tuple[int, str]]:
    """``(number, line)``: the 0-based line number of each input line in the original file.

    Without ``numbers`` that is the line's own position; with it (the ``--line-numbers`` file an earlier
    stage wrote for this input), the number read from it, so numbers survive a chain of filters.
    """
    if numbers is None:
        yield from enumerate(lines)
        return
    nums = iter(read_lines(numbers, progress=False))
    for k, line in enumerate(lines):
        raw = next(nums, None)
        if raw is None:
            raise UserError(
                f"{numbers}: only {k} line numbers for a longer input: pass the --line-numbers file "
                "written together with this input"
            )
        try:
            n = int(raw)
        except ValueError:
            raise located(numbers, k + 1, f"expected a line number, got {raw[:20]!r}") from None
        yield n, line
    if next(nums, None) is not None:
        raise UserError(
            f"{numbers}: more line numbers than input lines: pass the --line-numbers file written "
            "together with this input"
        )


# ``--line-numbers`` / ``--input-line-numbers``, the same in every filtering stage (mine-lid, mine-filter)
LINE_NUMBERS_HELP = "also write, per output line, its 0-based line number in the original file"
INPUT_LINE_NUMBERS_HELP = (
    "the --line-numbers file of the stage that wrote --input, so the numbers written are those of the original file"
)


class LineNumberTracker:
    """Carries the original line numbers of a stream through a filter that yields one result per input
    line, in order, and writes the numbers of the kept lines (one per output line) to ``out``."""

    def __init__(
        self, out: str | os.PathLike | None, numbers_in: str | os.PathLike | None, stack: contextlib.ExitStack
    ):
        self.active = out is not None or numbers_in is not None
        self.numbers_in = numbers_in
        self.fh = stack.enter_context(atomic_write(out)) if out is not None else None
        self.pending: collections.deque[int] = collections.deque()

    def feed(self, lines: Iterable[str]) -> Iterator[str]:
        """The input lines, remembering each one's number (call ``result`` once per filter result)."""
        if not self.active:
            yield from lines
            return
        for n, line in with_line_numbers(lines, self.numbers_in):
            self.pending.append(n)
            yield line

    def discard_last(self) -> None:
        """Forget the line just read: the caller dropped it before the filter saw it (a bad TSV row)."""
        if self.active:
            self.pending.pop()

    def result(self, kept: bool) -> None:
        if not self.active:
            return
        n = self.pending.popleft()
        if kept and self.fh is not None:
            self.fh.write(f"{n}\n")


@contextlib.contextmanager
def open_output(path: str | os.PathLike | None) -> Iterator[IO[str]]:
    """Text output: stdout for ``None``/``-``, otherwise an atomic write (temp file + rename)."""
    if path is None or str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_write(path) as fh:
        yield fh
