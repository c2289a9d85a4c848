"""A stdlib-only reader of GNU gettext ``.mo`` catalogues.

Why not ``gettext.GNUTranslations``: it hides plurals behind ``ngettext``, drops nothing but also tells
nothing about corrupt files, and decodes with one charset for the whole catalogue only after parsing
the header itself. We need every (English, translation) pair, the msgctxt, the plural forms, and an
error that names the file and the broken field so a build can report and skip it.

Format (GNU gettext manual, "The Format of GNU MO Files")::

    0   magic 0x950412de (its byte order gives the file's byte order)
    4   revision (major << 16 | minor); major 0 or 1 (1 adds sysdep segments such as "%Id"), read alike
    8   N, number of strings
    12  O, offset of the table of original strings   (N x [length, offset])
    16  T, offset of the table of translated strings (N x [length, offset])
    20  S, H: size and offset of the hash table (unused here)

An original string is ``msgctxt \\x04 msgid [\\x00 msgid_plural]``; a translation is
``msgstr[0] [\\x00 msgstr[1] ...]``. The entry with the empty msgid is the header (``charset=...``).
"""

from __future__ import annotations

import array
import codecs
import operator
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from mt.common.errors import UserError

MAGIC = 0x950412DE
_HEADER_SIZE = 28
_CHARSET_RE = re.compile(rb"charset=\s*([A-Za-z0-9_.:+-]+)", re.IGNORECASE)


class MoFormatError(UserError):
    """A ``.mo`` file that is truncated or corrupt; the message names the file and what is wrong."""


class MoEntry(NamedTuple):
    """One catalogue entry. ``msgstr`` holds every plural form (one item for a non-plural entry).

    A NamedTuple, not a dataclass: ~1.8M of them are made per build.
    """

    msgid: str
    msgstr: tuple[str, ...]
    msgctxt: str | None = None
    msgid_plural: str | None = None

    @property
    def key(self) -> str:
        """The lookup key gettext uses: ``msgctxt + '\\x04' + msgid`` (just ``msgid`` without context)."""
        return self.msgid if self.msgctxt is None else f"{self.msgctxt}\x04{self.msgid}"


@dataclass
class MoCatalog:
    path: str
    revision: int
    charset: str
    byteorder: str  # "little" | "big"
    header: dict[str, str] = field(default_factory=dict)  # parsed from the empty-msgid entry
    entries: list[MoEntry] = field(default_factory=list)  # without the header entry

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(English, translation) pairs: singular with msgstr[0], plural with msgstr[1] when present.

        Empty translations (untranslated entries that some tools still write) are skipped.
        """
        for e in self.entries:
            if e.msgstr and e.msgstr[0]:
                yield e.msgid, e.msgstr[0]
            if e.msgid_plural is not None and len(e.msgstr) > 1 and e.msgstr[1]:
                yield e.msgid_plural, e.msgstr[1]


def _fail(path: object, what: str) -> MoFormatError:
    return MoFormatError(f"{path}: not a valid .mo file: {what}; re-install the package that owns it")


def _charset(path: object, header: bytes) -> str:
    m = _CHARSET_RE.search(header)
    if not m:
        return "utf-8"
    name = m.group(1).decode("ascii")
    if name.upper() == "CHARSET":  # the untouched template value written by xgettext
        return "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise _fail(path, f"unknown charset {name!r} in the header") from None


def _parse_header(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def parse_mo(data: bytes, path: str | os.PathLike = "<bytes>") -> MoCatalog:
    """Parse the bytes of a ``.mo`` file. Raises MoFormatError naming ``path`` on any inconsistency."""
    path = str(path)
    size = len(data)
    if size < _HEADER_SIZE:
        raise _fail(path, f"file is {size} bytes, shorter than the {_HEADER_SIZE}-byte header")
    magic_le = int.from_bytes(data[:4], "little")
    if magic_le == MAGIC:
        byteorder = "little"
    elif int.from_bytes(data[:4], "big") == MAGIC:
        byteorder = "big"
    else:
        raise _fail(path, f"bad magic number 0x{magic_le:08x} (expected 0x{MAGIC:08x} in either byte order)")
    revision, n, orig_off, trans_off = (int.from_bytes(data[i : i + 4], byteorder) for i in (4, 8, 12, 16))
    if revision >> 16 not in (0, 1):
        raise _fail(path, f"unsupported major revision {revision >> 16} (GNU gettext writes 0 or 1)")
    for name, off in (("originals", orig_off), ("translations", trans_off)):
        if off + 8 * n > size:
            raise _fail(
                path,
                f"table of {name} at offset {off} with {n} entries runs past the end "
                f"of the file ({size} bytes): truncated",
            )

    def table(off: int) -> array.array:
        t = array.array("I")
        assert t.itemsize == 4
        t.frombytes(data[off : off + 8 * n])
        if byteorder != sys.byteorder:
            t.byteswap()
        return t

    otab, ttab = table(orig_off), table(trans_off)
    olens, ooffs, tlens, toffs = otab[0::2], otab[1::2], ttab[0::2], ttab[1::2]
    for what, lens, offs in (("original string", olens, ooffs), ("translation", tlens, toffs)):
        if n and max(map(operator.add, lens, offs)) > size:  # C-speed check, then find the culprit
            i = next(i for i in range(n) if lens[i] + offs[i] > size)
            raise _fail(
                path,
                f"{what} #{i} (offset {offs[i]}, length {lens[i]}) runs past the end "
                f"of the file ({size} bytes): truncated",
            )
    originals = [data[o : o + n_] for n_, o in zip(olens, ooffs)]
    translations = [data[o : o + n_] for n_, o in zip(tlens, toffs)]

    header_bytes = next((t for o, t in zip(originals, translations) if o == b""), b"")
    charset = _charset(path, header_bytes)
    try:
        orig_text = [b.decode(charset) for b in originals]
        trans_text = [b.decode(charset) for b in translations]
    except UnicodeDecodeError:
        for i, b in enumerate(originals + translations):
            try:
                b.decode(charset)
            except UnicodeDecodeError as exc:
                kind = "original string" if i < n else "translation"
                raise _fail(
                    path, f"{kind} #{i % n} is not valid {charset} ({exc.reason} at byte {exc.start})"
                ) from None
        raise
    cat = MoCatalog(path=path, revision=revision, charset=charset, byteorder=byteorder)
    entries = cat.entries
    for orig, trans in zip(orig_text, trans_text):
        if orig == "":
            cat.header = _parse_header(trans)
            continue
        if "\x04" in orig:
            ctxt, _, orig = orig.partition("\x04")
        else:
            ctxt = None
        if "\x00" in orig:
            msgid, _, plural = orig.partition("\x00")
        else:
            msgid, plural = orig, None
        entries.append(MoEntry(msgid, tuple(trans.split("\x00")), ctxt, plural))
    return cat


def read_mo(path: str | os.PathLike) -> MoCatalog:
    """Read and parse one ``.mo`` file (see :func:`parse_mo`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MoFormatError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_mo(data, path)
