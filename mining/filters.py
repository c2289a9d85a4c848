"""``mine-filter``: clean monolingual text or bitext TSV before embedding and mining.

Every filter is a small pure function that returns ``None`` (keep) or a reason code, so Python
callers can reuse them one by one; ``filter_lines`` / ``filter_bitext`` chain them in the order
below and stream, with exact and near-duplicate removal over bounded sets of 64-bit hashes.

Order (the first reason that applies is the one counted):
    normalise -> empty -> too_short/too_long -> length_ratio -> identical -> script
    -> duplicate -> near_duplicate
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import unicodedata
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from mt.common.errors import UserError, located
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import check_code, script_of
from mt.common.scripts import MIN_SCRIPT_SHARE, han_variant, script_fraction, text_width
from mt.common.textio import (
    INPUT_LINE_NUMBERS_HELP,
    LINE_NUMBERS_HELP,
    LineNumberTracker,
    check_input,
    check_outputs,
    chunks,
    open_output,
    read_lines,
)

# reason codes, in the order they are checked
EMPTY = "empty"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
LENGTH_RATIO = "length_ratio"
IDENTICAL = "identical"
SCRIPT = "script"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
BAD_COLUMNS = "bad_columns"
REASONS = (BAD_COLUMNS, EMPTY, TOO_SHORT, TOO_LONG, LENGTH_RATIO, IDENTICAL, SCRIPT, DUPLICATE, NEAR_DUPLICATE)


# --- normalisation --------------------------------------------------------------------------------
# A subset of Moses' normalize-punctuation.perl: typographic quotes and dashes to ASCII, no-break and
# other odd spaces to a plain space, no space before , . ; : ! ? ) % and none after (.
_PUNCT_TABLE = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u00b4": "'",
        "`": "'",
        "\u2013": "-",
        "\u2014": " - ",
        "\u2212": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u2007": " ",
        "\u202f": " ",
        "\u2009": " ",
        "\u200a": " ",
        "\u3000": " ",
    }
)
_SPACE_BEFORE = re.compile(r" +([,.;:!?)%])")
_SPACE_AFTER_PAREN = re.compile(r"\( +")
_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2060\ufeff]")


def normalize_punct(text: str) -> str:
    """Moses-style punctuation normalisation (quotes, dashes, odd spaces, spaces before punctuation)."""
    text = text.translate(_PUNCT_TABLE)
    text = _SPACE_BEFORE.sub(r"\1", text)
    return _SPACE_AFTER_PAREN.sub("(", text)


def normalize_text(text: str, nfkc: bool = True, punct: bool = True) -> str:
    """NFKC, punctuation normalisation, control/zero-width characters removed, whitespace collapsed."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text)
    if punct:
        text = normalize_punct(text)
    return _WS.sub(" ", text).strip()


def near_dup_key(text: str, fold_digits: bool = True) -> str:
    """The form near-duplicates share: lower-cased, digits -> 0 (``fold_digits``), punctuation/symbols and
    spaces removed."""
    out = []
    for ch in text.lower():
        if ch.isdigit():
            out.append("0" if fold_digits else ch)
        elif ch.isspace() or unicodedata.category(ch)[0] in "PSZC":
            continue
        else:
            out.append(ch)
    return "".join(out)


def hash64(text: str) -> int:
    """Deterministic 64-bit hash (blake2b), the same across runs and machines."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


# --- the filters ----------------------------------------------------------------------------------
def n_words(text: str) -> int:
    return len(text.split())


def check_empty(text: str) -> str | None:
    return EMPTY if not text.strip() else None


def check_length(
    text: str, min_chars: int = 0, max_chars: int = 0, min_words: int = 0, max_words: int = 0
) -> str | None:
    """Length bounds in characters (``text_width``: a Han, kana or Hangul character counts two) and
    whitespace-separated words; 0 disables a bound."""
    n = text_width(text)
    if n < min_chars:
        return TOO_SHORT
    if max_chars and n > max_chars:
        return TOO_LONG
    if min_words or max_words:
        w = n_words(text)
        if w < min_words:
            return TOO_SHORT
        if max_words and w > max_words:
            return TOO_LONG
    return None


def check_ratio(src: str, tgt: str, max_ratio: float) -> str | None:
    """Character-length ratio (longer / shorter) of a pair above ``max_ratio``; 0 disables."""
    if not max_ratio:
        return None
    a, b = len(src), len(tgt)
    if min(a, b) == 0 or max(a, b) / min(a, b) > max_ratio:
        return LENGTH_RATIO
    return None


def check_identical(src: str, tgt: str) -> str | None:
    """A 'translation' equal to its source once case, digits and punctuation are ignored."""
    return IDENTICAL if near_dup_key(src) == near_dup_key(tgt) else None


def check_script(text: str, lang: str, min_fraction: float) -> str | None:
    """Fewer than ``min_fraction`` of the units in the script of ``lang`` (``deu_Latn`` -> Latn); 0 disables.

    Units (``mt.common.scripts.script_units``): a word of an alphabetic script, one Han / kana / Hangul
    character, one letter of Thai, Lao, Khmer or Myanmar (no spaces between words there); so a Chinese
    line with Latin product names stays Chinese. For ``Hans``/``Hant`` a text clearly written in the
    other variant also fails.
    """
    if not min_fraction:
        return None
    script = script_of(lang)
    if script_fraction(text, script) < min_fraction:
        return SCRIPT
    if script in ("Hans", "Hant") and han_variant(text) not in (None, script):
        return SCRIPT
    return None


# --- bounded hash set for streaming dedup -------------------------------------------------------
class HashSet64:
    """Open-addressing set of 64-bit hashes in one numpy array: 16 bytes per entry at most, batch inserts.

    It doubles while under ``max_bytes``; once full it stops adding (it still finds hashes it holds)
    and ``saturated`` becomes True, so memory stays bounded whatever the input size.
    """

    def __init__(self, max_bytes: int = 1 << 30, initial: int = 1 << 16):
        self.max_slots = max(1 << 10, 1 << int(np.log2(max(max_bytes // 8, 1))))
        self.table = np.zeros(min(initial, self.max_slots), dtype=np.uint64)
        self.size = 0
        self.saturated = False

    def __len__(self) -> int:
        return self.size

    def _probe(self, keys: np.ndarray, insert: bool) -> np.ndarray:
        """Per distinct key: True where it was already present. Inserts the missing ones if ``insert``."""
        table = self.table
        mask = np.uint64(len(table) - 1)
        pos = (keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - int(np.log2(len(table))))
        pos = pos & mask
        found = np.zeros(len(keys), dtype=bool)
        todo = np.arange(len(keys))
        while len(todo):
            slot = table[pos[todo]]
            hit = slot == keys[todo]
            found[todo[hit]] = True
            empty = slot == 0
            if insert and empty.any():
                idx = todo[empty]
                table[pos[idx]] = keys[idx]  # several keys may race for one slot: one wins
                won = table[pos[idx]] == keys[idx]
                self.size += int(won.sum())
                done = np.zeros(len(todo), dtype=bool)
                done[np.flatnonzero(empty)[won]] = True
                done |= hit
            else:
                done = hit | empty
            todo = todo[~done]
            pos[todo] = (pos[todo] + np.uint64(1)) & mask
        return found

    def _grow(self) -> None:
        old = self.table[self.table != 0]
        self.table = np.zeros(len(self.table) * 2, dtype=np.uint64)
        self.size = 0
        self._probe(old, insert=True)

    def add(self, hashes: np.ndarray) -> np.ndarray:
        """Add a batch; returns True for each element seen before (earlier in the batch included)."""
        h = np.asarray(hashes, dtype=np.uint64).copy()
        h[h == 0] = 1  # 0 marks an empty slot
        uniq, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        while (self.size + len(uniq)) * 2 > len(self.table) and len(self.table) * 2 <= self.max_slots:
            self._grow()
        room = len(self.table) // 2 - self.size
        if room >= len(uniq):
            present = self._probe(uniq, insert=True)
        else:  # full: look everything up, add only what fits, earliest lines first
            self.saturated = True
            present = self._probe(uniq, insert=False)
            if room > 0:
                missing = np.flatnonzero(~present)
                missing = missing[np.argsort(first[missing], kind="stable")][:room]
                self._probe(uniq[missing], insert=True)
        seen = present[inverse.reshape(-1)]
        later = np.ones(len(h), dtype=bool)
        later[first] = False  # repeats inside the batch
        return seen | later


# --- config, report, drivers ----------------------------------------------------------------------
@dataclass
class FilterConfig:
    """The filters of ``mine-filter``: each field but batch_size is also its flag."""

    min_chars: int = arg(5, "a Han, kana or Hangul (wide) character counts two")
    max_chars: int = arg(1050, "0 = no limit")
    min_words: int = arg(0, "0 = off; words are unhelpful for CJK")
    max_words: int = arg(0, "0 = off")
    max_len_ratio: float = arg(9.0, "bitext: longest/shortest character length (0 = off)")
    min_script_fraction: float = arg(
        MIN_SCRIPT_SHARE,
        "share of the text in the language's script, counting words of alphabetic scripts and characters of "
        "Han, kana, Hangul, Thai, Lao, Khmer, Myanmar (0 = off)",
    )
    normalize: bool = arg(True, "NFKC, punctuation and space normalisation (--no-normalize: keep the text as is)")
    dedup: bool = arg(True, "drop exact duplicates (--no-dedup keeps them)")
    near_dedup: bool = arg(True, "drop near-duplicates (--no-near-dedup keeps them)")
    dedup_memory_mb: int = arg(512, "memory bound of the dedup hash sets (16 bytes per line)")
    batch_size: int = 8192


@dataclass
class FilterReport:
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    dedup_saturated: bool = False

    def rows(self) -> list[tuple[str, int]]:
        return [(r, self.dropped[r]) for r in REASONS if self.dropped[r]]

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(self.rows()),
            "dedup_saturated": self.dedup_saturated,
        }

    def format(self) -> str:
        w = max([len(r) for r, _ in self.rows()] + [len("kept")])
        lines = [f"{'input':<{w}}  {self.total:>10}"]
        for r, n in self.rows():
            pct = 100.0 * n / self.total if self.total else 0.0
            lines.append(f"{r:<{w}}  {n:>10}  {pct:5.1f}%")
        pct = 100.0 * self.kept / self.total if self.total else 0.0
        lines.append(f"{'kept':<{w}}  {self.kept:>10}  {pct:5.1f}%")
        if self.dedup_saturated:
            lines.append(
                "warning: the dedup hash set reached --dedup-memory-mb; later duplicates of new lines were kept"
            )
        return "\n".join(lines)

    def write(self, path: str) -> None:
        """JSON for ``*.json``, otherwise TSV ``reason<TAB>lines``."""
        with atomic_write(path) as fh:
            if path.endswith(".json"):
                json.dump(self.to_dict(), fh, indent=1)
                fh.write("\n")
            else:
                fh.write(f"input\t{self.total}\n")
                for r, n in self.rows():
                    fh.write(f"{r}\t{n}\n")
                fh.write(f"kept\t{self.kept}\n")


class _Deduper:
    """Exact and near-duplicate sets over the keys of lines that passed every other filter."""

    def __init__(self, cfg: FilterConfig):
        budget = cfg.dedup_memory_mb << 20
        both = cfg.dedup and cfg.near_dedup
        self.exact = HashSet64(budget // 2 if both else budget) if cfg.dedup else None
        self.near = HashSet64(budget // 2 if both else budget) if cfg.near_dedup else None

    @property
    def saturated(self) -> bool:
        return bool((self.exact and self.exact.saturated) or (self.near and self.near.saturated))

    def reasons(self, exact_keys: Sequence[str], near_keys: Sequence[str]) -> list[str | None]:
        out: list[str | None] = [None] * len(exact_keys)
        if not exact_keys:
            return out
        if self.exact is not None:
            dup = self.exact.add(np.fromiter((hash64(k) for k in exact_keys), np.uint64, len(exact_keys)))
            out = [DUPLICATE if d else None for d in dup]
        if self.near is not None:
            near = self.near.add(np.fromiter((hash64(k) for k in near_keys), np.uint64, len(near_keys)))
            out = [r or (NEAR_DUPLICATE if d else None) for r, d in zip(out, near)]
        return out


def filter_lines(
    lines: Iterable[str], lang: str, cfg: FilterConfig | None = None, report: FilterReport | None = None
) -> Iterator[tuple[str, str | None]]:
    """Monolingual: yield ``(normalised line, reason or None)`` for every input line, in order."""
    cfg = cfg or FilterConfig()
    report = report if report is not None else FilterReport()
    dedup = _Deduper(cfg)
    for chunk in chunks(lines, cfg.batch_size):
        texts = [normalize_text(s) if cfg.normalize else s.strip() for s in chunk]
        reasons: list[str | None] = []
        for t in texts:
            reasons.append(
                check_empty(t)
                or check_length(t, cfg.min_chars, cfg.max_chars, cfg.min_words, cfg.max_words)
                or check_script(t, lang, cfg.min_script_fraction)
            )
        ok = [i for i, r in enumerate(reasons) if r is None]
        # digits kept: "Switch to workspace 4" and "... 9" are two sentences with two translations (folding them
        # dropped 7 of 300 true Hindi pairs of the demo's mono files); bitext near-dedup still folds them
        near = [near_dup_key(texts[i], fold_digits=False) for i in ok]
        for i, r in zip(ok, dedup.reasons([texts[i] for i in ok], near)):
            reasons[i] = r
        for t, r in zip(texts, reasons):
            report.total += 1
            if r is None:
                report.kept += 1
            else:
                report.dropped[r] += 1
            yield t, r
        report.dedup_saturated = dedup.saturated


def filter_bitext(
    pairs: Iterable[tuple[str, str]],
    src_lang: str,
    tgt_lang: str,
    cfg: FilterConfig | None = None,
    report: FilterReport | None = None,
) -> Iterator[tuple[str, str, str | None]]:
    """Bitext: yield ``(src, tgt, reason or None)`` per pair; dedup is over the (src, tgt) pair."""
    cfg = cfg or FilterConfig()
    report = report if report is not None else FilterReport()
    dedup = _Deduper(cfg)
    for chunk in chunks(pairs, cfg.batch_size):
        norm = [(normalize_text(s), normalize_text(t)) if cfg.normalize else (s.strip(), t.strip()) for s, t in chunk]
        reasons: list[str | None] = []
        for s, t in norm:
            reasons.append(
                check_empty(s)
                or check_empty(t)
                or check_length(s, cfg.min_chars, cfg.max_chars, cfg.min_words, cfg.max_words)
                or check_length(t, cfg.min_chars, cfg.max_chars, cfg.min_words, cfg.max_words)
                or check_ratio(s, t, cfg.max_len_ratio)
                or check_identical(s, t)
                or check_script(s, src_lang, cfg.min_script_fraction)
                or check_script(t, tgt_lang, cfg.min_script_fraction)
            )
        ok = [i for i, r in enumerate(reasons) if r is None]
        exact = [f"{norm[i][0]}\t{norm[i][1]}" for i in ok]
        near = [f"{near_dup_key(norm[i][0])}\t{near_dup_key(norm[i][1])}" for i in ok]
        for i, r in zip(ok, dedup.reasons(exact, near)):
            reasons[i] = r
        for (s, t), r in zip(norm, reasons):
            report.total += 1
            if r is None:
                report.kept += 1
            else:
                report.dropped[r] += 1
            yield s, t, r
        report.dedup_saturated = dedup.saturated


@dataclass
class FilterJob:
    """One ``mine-filter`` run: its files and languages (flags) and its filters."""

    input: str = arg(help="text file or bitext TSV (.gz or - for stdin)", short="-i", required=True)
    output: str | None = arg(help="kept lines (default: stdout)", short="-o")
    lang: str | None = arg(None, "FLORES-200 code of a monolingual file")
    src_lang: str | None = arg(None, "FLORES-200 code of the bitext source column")
    tgt_lang: str | None = arg(None, "FLORES-200 code of the bitext target column")
    report: str | None = arg(None, "write the per-filter counts here (JSON for *.json, else TSV)")
    dropped: str | None = arg(None, "write dropped lines as reason<TAB>line here")
    line_numbers: str | None = arg(None, LINE_NUMBERS_HELP)
    input_line_numbers: str | None = arg(None, INPUT_LINE_NUMBERS_HELP)
    progress: bool = True
    config: FilterConfig = field(default_factory=FilterConfig)


def _read_tsv(
    path: str, lines: Iterable[str], report: FilterReport, bad: list[int]
) -> Iterator[tuple[str | None, str, str] | None]:
    """``src<TAB>tgt`` or mined ``score<TAB>src<TAB>tgt`` rows (the first line decides); other rows are
    counted as bad_columns (their line numbers collected in ``bad``) and yield None."""
    ncols = None
    for lineno, line in enumerate(lines, 1):
        cols = line.split("\t")
        if ncols is None:
            ncols = len(cols)
            if ncols not in (2, 3):
                raise located(
                    path,
                    lineno,
                    f"expected src<TAB>tgt or score<TAB>src<TAB>tgt, got {ncols} column(s); "
                    "for a monolingual file pass --lang instead of --src-lang/--tgt-lang",
                )
            if ncols == 3:
                try:
                    float(cols[0])
                except ValueError:
                    raise located(
                        path,
                        lineno,
                        f"3 columns but the first ({cols[0][:20]!r}) is not a score; expected score<TAB>src<TAB>tgt",
                    ) from None
        if len(cols) != ncols:
            report.total += 1
            report.dropped[BAD_COLUMNS] += 1
            bad.append(lineno)
            yield None
            continue
        yield (cols[0] if ncols == 3 else None), cols[-2], cols[-1]


def run_filter(job: FilterJob) -> FilterReport:
    """Filter one file (monolingual with ``lang``, bitext TSV with ``src_lang``/``tgt_lang``)."""
    bitext = bool(job.src_lang or job.tgt_lang)
    if bitext == bool(job.lang) or (bitext and not (job.src_lang and job.tgt_lang)):
        raise UserError("pass --lang CODE for a monolingual file, or --src-lang and --tgt-lang for bitext TSV")
    check_input(job.input)
    check_outputs(
        {"--input": job.input, "--input-line-numbers": job.input_line_numbers},
        {"--output": job.output, "--dropped": job.dropped, "--line-numbers": job.line_numbers, "--report": job.report},
    )
    cfg = job.config
    if cfg.batch_size < 1 or cfg.dedup_memory_mb < 1:
        raise UserError("--batch-size and --dedup-memory-mb must be >= 1")
    report = FilterReport()
    bad: list[int] = []
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open_output(job.output))
        dropped = stack.enter_context(atomic_write(job.dropped)) if job.dropped else None
        numbers = LineNumberTracker(job.line_numbers, job.input_line_numbers, stack)
        lines = numbers.feed(read_lines(job.input, desc="mine-filter", progress=job.progress))
        if bitext:
            src_lang = check_code(job.src_lang, "--src-lang")
            tgt_lang = check_code(job.tgt_lang, "--tgt-lang")
            rows = _read_tsv(job.input, lines, report, bad)
            scores: deque[str | None] = deque()  # the mined score column rides along, in order

            def pairs() -> Iterator[tuple[str, str]]:
                for row in rows:
                    if row is None:  # a bad_columns row, dropped as it is read: the number just read is its
                        numbers.discard_last()
                        continue
                    scores.append(row[0])
                    yield row[1], row[2]

            for s, t, reason in filter_bitext(pairs(), src_lang, tgt_lang, cfg, report):
                score = scores.popleft()
                numbers.result(reason is None)
                prefix = f"{score}\t" if score is not None else ""
                if reason is None:
                    out.write(f"{prefix}{s}\t{t}\n")
                elif dropped is not None:
                    dropped.write(f"{reason}\t{prefix}{s}\t{t}\n")
        else:
            lang = check_code(job.lang, "--lang")
            for text, reason in filter_lines(lines, lang, cfg, report):
                numbers.result(reason is None)
                if reason is None:
                    out.write(text + "\n")
                elif dropped is not None:
                    dropped.write(f"{reason}\t{text}\n")
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        print(
            f"warning: {job.input}: {len(bad)} line(s) with the wrong number of columns dropped (lines {shown})",
            file=sys.stderr,
        )
    print(f"mine-filter {job.input}:\n{report.format()}", file=sys.stderr)
    if job.report:
        report.write(job.report)
    return report
