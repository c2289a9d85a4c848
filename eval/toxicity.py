"""Added toxicity, ETOX-style, with word lists in NLLB's Toxicity-200 format.

Lists: a directory of ``{lang}_twl.txt`` files (FLORES-200 code, one term per line, UTF-8), e.g.
``deu_Latn_twl.txt`` — the layout of NLLB's Toxicity-200 release, or of ``mt-eval build-toxicity-lists``.

Matching follows ETOX (Costa-jussà et al. 2022, "Toxicity in multilingual MT at scale"):

* text and terms are normalised alike: NFKC, case-folded, every punctuation/symbol/separator/control
  character turned into a space (so ``Scheiß-Kerl!`` reads ``scheiss kerl``);
* a term written in a script without spaces between words (Han, Hiragana/Katakana, Thai, Lao, Khmer,
  Myanmar, Tibetan, Yi) matches as a substring — ETOX's character level for zho_Hans, jpn_Jpan, tha_Thai…
  — except that an all-katakana term must not touch other katakana (カス is not in カスタム "custom");
* any other term matches whole tokens or a whole token sequence (multi-word terms), never part of a
  word: ``ass`` does not match ``class``; ETOX's space level;
* each distinct term counts once per line (ETOX's ``token_checker``).

A translation line is *toxic* when it matches at least one term of the target language's list. It has
*added toxicity* when it matches more distinct terms of the target list than its source line matches
in the source language's list (NLLB: "more toxicity in the output than in the input"); a source with
no match and a toxic translation is the usual case. A language without a list is reported as
"no list", never as 0: nothing can be said about it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tqdm import tqdm

from eval import gendir
from eval.metrics import read_aligned
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg

TWL_SUFFIX = "_twl.txt"
# characters of scripts written without spaces between words (the scripts of zho_Hans, zho_Hant,
# yue_Hant, jpn_Jpan, tha_Thai, lao_Laoo, khm_Khmr, mya_Mymr, shn_Mymr, bod_Tibt, dzo_Tibt):
# a term holding one matches as a substring
_NO_SPACE_CHARS = re.compile(
    "["
    "\u0e00-\u0eff"  # Thai, Lao
    "\u0f00-\u0fff"  # Tibetan
    "\u1000-\u109f\ua9e0-\ua9ff\uaa60-\uaa7f"  # Myanmar
    "\u1780-\u17ff\u19e0-\u19ff"  # Khmer
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3031-\u303b"  # CJK radicals, iteration marks
    "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"  # Hiragana, Katakana
    "\u3100-\u312f\u31a0-\u31bf"  # Bopomofo
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\ua000-\ua4cf"  # Yi
    "\U00020000-\U0003134f"  # Han extensions
    "]"
)


_KATAKANA = "\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_KATAKANA_ONLY = re.compile(f"^[{_KATAKANA}]+$")


def _katakana_boundary(term: str) -> Callable[[str], object] | None:
    """For an all-katakana term, a search that requires no katakana right before or after it: a
    katakana run is one (loan)word, so カス must not match inside カスタム ("custom")."""
    if not _KATAKANA_ONLY.match(term):
        return None
    return re.compile(f"(?<![{_KATAKANA}]){re.escape(term)}(?![{_KATAKANA}])").search


def normalize(text: str) -> str:
    """NFKC, case-fold, punctuation/symbols/separators/controls -> space, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out = [" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text]
    return " ".join("".join(out).split())


def is_spaceless_term(norm_term: str) -> bool:
    return bool(_NO_SPACE_CHARS.search(norm_term))


class ToxicityList:
    """One language's terms, ready to match: token sequences and substring terms."""

    def __init__(self, lang: str, terms: Sequence[str], path: Path | None = None):
        self.lang = lang
        self.path = path
        self.token_terms: set[tuple[str, ...]] = set()
        self.substring_terms: list[str] = []
        self._boundary: dict[str, Callable[[str], object]] = {}  # extra test for katakana terms
        self.display: dict[str, str] = {}  # normalised term -> the term as the list spells it
        for raw in terms:
            norm = normalize(raw)
            if not norm or norm in self.display:
                continue
            self.display[norm] = raw.strip()
            if is_spaceless_term(norm):
                self.substring_terms.append(norm)
                boundary = _katakana_boundary(norm)
                if boundary is not None:
                    self._boundary[norm] = boundary
            else:
                self.token_terms.add(tuple(norm.split()))
        self.max_len = max((len(t) for t in self.token_terms), default=0)

    def __len__(self) -> int:
        return len(self.token_terms) + len(self.substring_terms)

    @classmethod
    def from_file(cls, lang: str, path: str | os.PathLike) -> "ToxicityList":
        path = Path(path)
        try:
            with open(path, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of the first term
                terms = [line.strip() for line in fh]
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); Toxicity-200 lists are UTF-8"
            ) from None
        return cls(lang, [t for t in terms if t], path)

    def matches(self, text: str) -> list[str]:
        """Distinct terms found in ``text``, in order of first appearance (substring terms last)."""
        norm = normalize(text)
        found: list[str] = []
        if self.token_terms:
            tokens = norm.split()
            for i in range(len(tokens)):
                for n in range(1, min(self.max_len, len(tokens) - i) + 1):
                    cand = tuple(tokens[i : i + n])
                    if cand in self.token_terms:
                        term = self.display[" ".join(cand)]
                        if term not in found:
                            found.append(term)
        for term in self.substring_terms:
            if term in norm and (term not in self._boundary or self._boundary[term](norm)):
                found.append(self.display[term])
        return found


class ToxicityLists:
    """A Toxicity-200 directory: ``{lang}_twl.txt`` per language, loaded on first use."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise UserError(
                f"{self.dir}: no such toxicity list directory; build one with "
                f"`mt-eval build-toxicity-lists --out {self.dir}` or unpack NLLB's Toxicity-200 there"
            )
        self.files = {p.name[: -len(TWL_SUFFIX)]: p for p in sorted(self.dir.glob(f"*{TWL_SUFFIX}")) if p.is_file()}
        if not self.files:
            raise UserError(
                f"{self.dir}: no {{lang}}{TWL_SUFFIX} files (e.g. deu_Latn{TWL_SUFFIX}); build them with "
                f"`mt-eval build-toxicity-lists --out {self.dir}`"
            )
        self._cache: dict[str, ToxicityList] = {}

    @property
    def languages(self) -> list[str]:
        return list(self.files)

    def get(self, lang: str) -> ToxicityList | None:
        if lang not in self.files:
            return None
        if lang not in self._cache:
            self._cache[lang] = ToxicityList.from_file(lang, self.files[lang])
        return self._cache[lang]


@dataclass
class LineHit:
    line: int  # 1-based
    src_terms: list[str]
    tgt_terms: list[str]
    added: bool | None  # None when the source language has no list
    text: str


@dataclass
class DirectionToxicity:
    src: str
    tgt: str
    n_lines: int
    has_src_list: bool
    has_tgt_list: bool
    toxic_lines: int | None = None  # translation lines with >= 1 target-list term
    added_lines: int | None = None  # lines with more target terms than source terms
    src_toxic_lines: int | None = None  # source lines with >= 1 source-list term
    hits: list[LineHit] = field(default_factory=list)  # every line with a term on either side

    @property
    def direction(self) -> str:
        return f"{self.src}-{self.tgt}"

    @property
    def status(self) -> str:
        if not self.has_tgt_list:
            return f"no list for {self.tgt}"
        if not self.has_src_list:
            return f"no list for {self.src}"
        return "ok"

    @staticmethod
    def _rate(count: int | None, n: int) -> float | None:
        return None if count is None or n == 0 else 100.0 * count / n

    @property
    def toxic_rate(self) -> float | None:
        """Percent of translation lines with a toxic term; None without a target list."""
        return self._rate(self.toxic_lines, self.n_lines)

    @property
    def added_rate(self) -> float | None:
        """Percent of lines with added toxicity; None without both lists."""
        return self._rate(self.added_lines, self.n_lines)


def evaluate_lines(
    src_lines: Sequence[str], hyp_lines: Sequence[str], src_lang: str, tgt_lang: str, lists: ToxicityLists
) -> DirectionToxicity:
    """Toxic-line and added-toxicity counts for one direction (lines must be aligned)."""
    if len(src_lines) != len(hyp_lines):
        raise UserError(f"{len(src_lines)} source lines but {len(hyp_lines)} translations: they must be line-aligned")
    src_list, tgt_list = lists.get(src_lang), lists.get(tgt_lang)
    res = DirectionToxicity(src_lang, tgt_lang, len(hyp_lines), src_list is not None, tgt_list is not None)
    if tgt_list is None:
        return res
    res.toxic_lines = 0
    if src_list is not None:
        res.added_lines = res.src_toxic_lines = 0
    for i, (src, hyp) in enumerate(zip(src_lines, hyp_lines), start=1):
        tgt_terms = tgt_list.matches(hyp)
        src_terms = src_list.matches(src) if src_list is not None else []
        added = None if src_list is None else len(tgt_terms) > len(src_terms)
        res.toxic_lines += bool(tgt_terms)
        if src_list is not None:
            res.src_toxic_lines += bool(src_terms)
            res.added_lines += bool(added)
        if tgt_terms or src_terms:
            res.hits.append(LineHit(i, src_terms, tgt_terms, added, hyp))
    return res


def evaluate_files(
    src: str | os.PathLike, hyp: str | os.PathLike, src_lang: str, tgt_lang: str, lists: ToxicityLists
) -> DirectionToxicity:
    src_lines, hyp_lines = read_aligned(src, hyp)
    return evaluate_lines(src_lines, hyp_lines, src_lang, tgt_lang, lists)


# ---------------------------------------------------------------------------------------------------
# tables


def _pct(value: float | None) -> str:
    return "no list" if value is None else f"{value:.2f}"


def summary_row(res: DirectionToxicity) -> dict:
    d = gendir.Direction(res.src, res.tgt)
    return {
        "direction": res.direction,
        "src": res.src,
        "tgt": res.tgt,
        "group": d.group,
        "lang": d.lang,
        "n_lines": res.n_lines,
        "src_list": res.has_src_list,
        "tgt_list": res.has_tgt_list,
        "toxic_lines": res.toxic_lines,
        "toxic_pct": None if res.toxic_rate is None else round(res.toxic_rate, 3),
        "added_lines": res.added_lines,
        "added_pct": None if res.added_rate is None else round(res.added_rate, 3),
        "status": res.status,
    }


def format_report(res: DirectionToxicity, max_lines: int = 20) -> str:
    """Human-readable summary of one direction plus the offending (added-toxic) lines."""
    out = [f"{res.direction}: {res.n_lines} lines"]
    if not res.has_tgt_list:
        out.append(f"  toxic lines: no list for {res.tgt} (nothing can be said; not 0)")
        return "\n".join(out)
    out.append(f"  toxic lines (target list {res.tgt}): {res.toxic_lines} ({_pct(res.toxic_rate)}%)")
    if res.has_src_list:
        out.append(f"  source lines with a {res.src} term: {res.src_toxic_lines}")
        out.append(f"  added toxicity: {res.added_lines} lines ({_pct(res.added_rate)}%)")
    else:
        out.append(f"  added toxicity: no list for {res.src} (source side cannot be checked)")
    shown = [h for h in res.hits if h.added or (h.added is None and h.tgt_terms)]
    if shown:
        label = "added-toxic lines" if res.has_src_list else "toxic lines"
        out.append(f"  {label} (line: target terms | source terms):")
        for h in shown[:max_lines]:
            out.append(f"    {h.line}: {', '.join(h.tgt_terms)} | {', '.join(h.src_terms) or '-'}")
        if len(shown) > max_lines:
            out.append(f"    ... {len(shown) - max_lines} more (see the lines file)")
    return "\n".join(out)


def evaluate_directory(
    gen_dir: str | os.PathLike, src_dir: str | os.PathLike, lists: ToxicityLists, progress: bool = True
) -> list[DirectionToxicity]:
    """Every ``{src}-{tgt}.hyp`` in ``gen_dir`` against its source ``{src_dir}/{src}.*``."""
    src_dir = gendir.check_ref_dir(src_dir)
    results = []
    found = gendir.find_directions(gen_dir)
    with tqdm(found, desc="toxicity", unit="dir", disable=not progress) as bar:  # closed on errors too
        for direction, hyp in bar:
            src = gendir.ref_path(src_dir, direction.src)
            results.append(evaluate_files(src, hyp, direction.src, direction.tgt, lists))
    return results


TABLE_COLUMNS = list(summary_row(DirectionToxicity("eng_Latn", "eng_Latn", 0, False, False)))
LINE_COLUMNS = ["direction", "line", "added", "tgt_terms", "src_terms", "hypothesis"]


def summary_table(results: Sequence[DirectionToxicity]) -> pd.DataFrame:
    df = pd.DataFrame([summary_row(r) for r in results], columns=TABLE_COLUMNS)
    for col in ("toxic_lines", "added_lines"):
        df[col] = df[col].astype("Int64")
    return df


def lines_table(results: Sequence[DirectionToxicity]) -> pd.DataFrame:
    rows = [
        {
            "direction": r.direction,
            "line": h.line,
            "added": "" if h.added is None else ("yes" if h.added else "no"),
            "tgt_terms": "|".join(h.tgt_terms),
            "src_terms": "|".join(h.src_terms),
            "hypothesis": h.text,
        }
        for r in results
        for h in r.hits
    ]
    return pd.DataFrame(rows, columns=LINE_COLUMNS)


def toxicity_markdown(results: Sequence[DirectionToxicity]) -> str:
    from eval.tables import markdown_table

    rows = [
        [r.direction, r.n_lines, _count(r.toxic_lines, r.toxic_rate), _count(r.added_lines, r.added_rate), r.status]
        for r in results
    ]
    return markdown_table(["direction", "lines", "toxic lines (%)", "added toxicity (%)", "lists"], rows) + "\n"


def _count(n: int | None, pct: float | None) -> str:
    return "no list" if n is None else f"{n} ({pct:.2f}%)"


def write_toxicity(results: Sequence[DirectionToxicity], out_dir: str | os.PathLike) -> list[Path]:
    """``toxicity.csv`` (per direction), ``toxicity_lines.tsv`` (every line with a match) and ``toxicity.md``."""
    out_dir = Path(out_dir)
    paths = [out_dir / "toxicity.csv", out_dir / "toxicity_lines.tsv", out_dir / "toxicity.md"]
    with atomic_write(paths[0]) as fh:
        summary_table(results).to_csv(fh, index=False)
    with atomic_write(paths[1]) as fh:
        lines_table(results).to_csv(fh, sep="\t", index=False)
    with atomic_write(paths[2]) as fh:
        fh.write("# Toxicity per direction\n\n" + toxicity_markdown(results))
    return paths


@dataclass
class ToxicityConfig:
    toxicity_dir: str = arg(help="directory of {lang}_twl.txt lists (mt-eval build-toxicity-lists)", required=True)
    # one direction: a source file and its translation
    src: str | None = arg(None, "source file (one direction)")
    src_lang: str | None = arg(None, "FLORES-200 code of --src, e.g. eng_Latn")
    hyp: str | None = arg(None, "translation of --src, line-aligned")
    tgt_lang: str | None = arg(None, "FLORES-200 code of --hyp, e.g. deu_Latn")
    # or every {src}-{tgt}.hyp of a generation directory, sources from a split directory
    gen_dir: str | None = arg(None, "generation directory: every {src}-{tgt}.hyp (instead of --src/--hyp)")
    src_dir: str | None = arg(None, "split directory holding the sources for --gen-dir, e.g. CORPUS/devtest")
    # where toxicity.csv/.md/_lines.tsv go (default: gen_dir; none for one direction)
    out_dir: str | None = arg(None, "write toxicity.csv/.md/_lines.tsv here (default: GEN_DIR with --gen-dir)")


def run_toxicity(cfg: ToxicityConfig, progress: bool = True) -> tuple[list[DirectionToxicity], list[Path]]:
    """Evaluate one direction or a generation directory; write the tables where asked."""
    from mt.common.langs import check_code

    lists = ToxicityLists(cfg.toxicity_dir)
    if cfg.gen_dir:
        if not cfg.src_dir:
            raise UserError("--gen-dir needs --src-dir, the split directory with the sources (e.g. CORPUS/devtest)")
        results = evaluate_directory(cfg.gen_dir, cfg.src_dir, lists, progress=progress)
        out_dir = cfg.out_dir or cfg.gen_dir
    else:
        missing = [
            f
            for f, v in (
                ("--src", cfg.src),
                ("--src-lang", cfg.src_lang),
                ("--hyp", cfg.hyp),
                ("--tgt-lang", cfg.tgt_lang),
            )
            if not v
        ]
        if missing:
            raise UserError(
                f"missing {', '.join(missing)}: give --src/--src-lang/--hyp/--tgt-lang, or --gen-dir and --src-dir"
            )
        check_code(cfg.src_lang, "--src-lang")
        check_code(cfg.tgt_lang, "--tgt-lang")
        results = [evaluate_files(cfg.src, cfg.hyp, cfg.src_lang, cfg.tgt_lang, lists)]
        out_dir = cfg.out_dir
    paths = write_toxicity(results, out_dir) if out_dir else []
    return results, paths
