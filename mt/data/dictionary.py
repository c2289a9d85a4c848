"""fairseq's ``dict.txt`` vocabulary: ``<s> <pad> </s> <unk>`` first, then one ``token count`` per line.

Indices match fairseq's Dictionary, so binarized data and checkpoints line up with fairseq tooling.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mt.common.errors import UserError, located
from mt.common.files import atomic_write
from mt.common.langs import lang_token, token_lang

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
_DICT_HINT = "is this a fairseq dict.txt? (mt-spm train writes one beside spm.model)"


def _shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error line, cut to ``limit`` characters (a binary file has very long lines)."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _decode_line(path: Path, lineno: int, raw: bytes) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise located(path, lineno, f"not valid UTF-8 (byte {exc.start} of the line): {_DICT_HINT}") from None
    if "\x00" in line:
        raise located(path, lineno, f"a NUL byte: this is a binary file, not a dictionary; {_DICT_HINT}")
    return line.rstrip("\r\n")


@dataclass
class Dictionary:
    """Token <-> index map with fairseq's special-symbol layout (bos=0, pad=1, eos=2, unk=3)."""

    symbols: list[str] = field(default_factory=lambda: [BOS, PAD, EOS, UNK])
    counts: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    nspecial: int = 4

    def __post_init__(self) -> None:
        self.indices = {s: i for i, s in enumerate(self.symbols)}

    bos_index = property(lambda self: 0)
    pad_index = property(lambda self: 1)
    eos_index = property(lambda self: 2)
    unk_index = property(lambda self: 3)

    def bos(self) -> int:
        return 0

    def pad(self) -> int:
        return 1

    def eos(self) -> int:
        return 2

    def unk(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, sym: str) -> bool:
        return sym in self.indices

    def __getitem__(self, idx: int) -> str:
        return self.symbols[idx] if 0 <= idx < len(self.symbols) else UNK

    def index(self, sym: str) -> int:
        return self.indices.get(sym, self.unk_index)

    def add_symbol(self, sym: str, n: int = 1) -> int:
        if sym in self.indices:
            i = self.indices[sym]
            self.counts[i] += n
            return i
        self.indices[sym] = len(self.symbols)
        self.symbols.append(sym)
        self.counts.append(n)
        return self.indices[sym]

    def extended(self, symbols: Sequence[str]) -> "Dictionary":
        """A copy with ``symbols`` appended (new ids after every existing one, so old ids stay valid)."""
        d = Dictionary(list(self.symbols), list(self.counts), self.nspecial)
        for sym in symbols:
            if sym in d.indices:
                raise UserError(f"token {sym} is already in the dictionary (id {d.indices[sym]})")
            d.add_symbol(sym)
        return d

    # --- language tokens -------------------------------------------------------------------
    def lang_index(self, code: str) -> int:
        """Index of ``__code__``; a clear error when the dictionary was built without it."""
        tok = lang_token(code)
        if tok not in self.indices:
            have = self.langs()
            listed = ", ".join(have[:12]) + (f", ... ({len(have)} in all)" if len(have) > 12 else "")
            raise UserError(
                f"language token {tok} is not in the dictionary (its languages: {listed or 'none'}): use one of "
                f"those, or rebuild dict.txt with mt-spm train --langs ... {code}"
            )
        return self.indices[tok]

    def langs(self) -> list[str]:
        """Language codes whose ``__xxx_Yyyy__`` tokens the dictionary holds, in index order."""
        return [c for s in self.symbols if (c := token_lang(s))]

    # --- encoding ---------------------------------------------------------------------------
    def encode_pieces(self, pieces: Sequence[str], append_eos: bool = True) -> list[int]:
        ids = [self.indices.get(p, 3) for p in pieces]
        if append_eos:
            ids.append(2)
        return ids

    def string(self, ids: Iterable[int], strip_special: bool = True) -> str:
        """Space-joined pieces (SentencePiece decodes them); specials and lang tokens dropped by default."""
        out = []
        for i in ids:
            i = int(i)
            if strip_special and (i < self.nspecial or token_lang(self[i])):
                continue
            out.append(self[i])
        return " ".join(out)

    # --- files ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dictionary":
        """Read fairseq ``dict.txt`` (``token count [#fairseq:overwrite]``)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: dictionary not found (create it with `mt-spm train` or pass --srcdict)")
        d = cls()
        with open(path, "rb") as fh:  # bytes: a binary or non-UTF-8 file is reported with its line, not a traceback
            for lineno, raw in enumerate(fh, 1):
                d._add_line(path, lineno, _decode_line(path, lineno, raw))
        return d

    def _add_line(self, path: Path, lineno: int, line: str) -> None:
        """One ``token count [#fairseq:overwrite]`` line of ``dict.txt`` (blank lines are skipped)."""
        if not line.strip():
            return
        overwrite = line.endswith(" #fairseq:overwrite")
        if overwrite:
            line = line[: -len(" #fairseq:overwrite")]
        tok, sep, cnt = line.rpartition(" ")
        if not sep or not tok:
            raise located(path, lineno, f"expected 'token count', got {_shown(line)}: {_DICT_HINT}")
        try:
            n = int(cnt)
        except ValueError:
            raise located(
                path, lineno, f"count {_shown(cnt)} is not an integer (line {_shown(line)}): {_DICT_HINT}"
            ) from None
        if tok in self.indices and not overwrite:
            raise located(path, lineno, f"duplicate token {_shown(tok)}; add '#fairseq:overwrite' to keep it")
        self.add_symbol(tok, n)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_write(path) as fh:
            for sym, n in zip(self.symbols[self.nspecial :], self.counts[self.nspecial :]):
                fh.write(f"{sym} {n}\n")

    def checksum(self) -> str:
        """Stable hash of the symbol list: checkpoints record it to catch a mismatched dict.txt."""
        return hashlib.sha256("\n".join(self.symbols).encode("utf-8")).hexdigest()[:16]
