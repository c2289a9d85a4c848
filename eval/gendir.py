"""Where evaluation inputs live: generation directories, references, and the corpus ``stats.tsv``.

Generation directory (what ``mt-generate``/``mt-translate`` write for evaluation; one file per direction)::

    {gen}/{src}-{tgt}.hyp      detokenised hypotheses, one per line, line-aligned with the references
                               (e.g. gen/eng_Latn-deu_Latn.hyp); other files in {gen} are ignored;
                               the names are mt.formats.hyp_files' (hyp_name / parse_hyp_name)

References and sources come from a FLORES-200-style split directory (``{corpus}/devtest``)::

    {ref_dir}/{lang}.{split}   e.g. devtest/deu_Latn.devtest (split = the directory's name)

``stats.tsv`` (written by ``mt-data build``) has the columns ``lang train_pairs dev devtest mono tier``;
tier is high/mid/low. It is looked for at ``--stats``, else beside the split directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mt.common.errors import UserError, located
from mt.common.langs import ENGLISH, is_code
from mt.formats.hyp_files import parse_hyp_name

TIERS = ("high", "mid", "low")


@dataclass(frozen=True)
class Direction:
    src: str
    tgt: str

    @property
    def name(self) -> str:
        return f"{self.src}-{self.tgt}"

    @property
    def group(self) -> str:
        """NLLB's grouping: English-centric out of / into English, or non-English (xx-yy)."""
        if self.src == ENGLISH:
            return "eng-xx"
        if self.tgt == ENGLISH:
            return "xx-eng"
        return "xx-yy"

    @property
    def lang(self) -> str:
        """The language a direction is filed under: its non-English side (the target for xx-yy)."""
        return self.src if self.tgt == ENGLISH else self.tgt


def find_directions(gen_dir: str | os.PathLike) -> list[tuple[Direction, Path]]:
    """Every ``{src}-{tgt}.hyp`` in a generation directory, sorted by name."""
    gen_dir = Path(gen_dir)
    if not gen_dir.is_dir():
        raise UserError(f"{gen_dir}: no such generation directory (expected files like eng_Latn-deu_Latn.hyp)")
    found = []
    for path in sorted(gen_dir.iterdir()):
        pair = parse_hyp_name(path.name)
        if pair and path.is_file():
            found.append((Direction(*pair), path))
    if not found:
        raise UserError(
            f"{gen_dir}: no hypothesis files; expected one detokenised file per direction named "
            f"{{src}}-{{tgt}}.hyp, e.g. {gen_dir}/eng_Latn-deu_Latn.hyp"
        )
    return found


def ref_path(ref_dir: str | os.PathLike, lang: str) -> Path:
    """``{ref_dir}/{lang}.{basename(ref_dir)}``, else the single ``{ref_dir}/{lang}.*`` file."""
    ref_dir = Path(ref_dir)
    exact = ref_dir / f"{lang}.{ref_dir.name}"
    if exact.is_file():
        return exact
    candidates = sorted(p for p in ref_dir.glob(f"{lang}.*") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(f"{ref_dir}: no reference for {lang} (expected {exact})")
    raise UserError(
        f"{ref_dir}: several files for {lang} ({', '.join(p.name for p in candidates)}); expected {exact.name}"
    )


def check_ref_dir(ref_dir: str | os.PathLike) -> Path:
    ref_dir = Path(ref_dir)
    if not ref_dir.is_dir():
        raise UserError(
            f"{ref_dir}: no such reference directory (expected CORPUS/devtest with files like deu_Latn.devtest)"
        )
    return ref_dir


def default_stats_path(ref_dir: str | os.PathLike) -> Path | None:
    """``stats.tsv`` beside the split directory (``{corpus}/stats.tsv`` for ``{corpus}/devtest``)."""
    for cand in (Path(ref_dir).parent / "stats.tsv", Path(ref_dir) / "stats.tsv"):
        if cand.is_file():
            return cand
    return None


def load_stats(path: str | os.PathLike) -> pd.DataFrame:
    """``stats.tsv`` as a DataFrame indexed by lang, with ``train_pairs`` (int) and ``tier``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such stats file (mt-data build writes CORPUS/stats.tsv)")
    try:
        df = pd.read_csv(path, sep="\t", dtype={"lang": str, "tier": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise located(path, None, f"cannot read as a TSV with a header line ({exc})") from None
    missing = [c for c in ("lang", "train_pairs", "tier") if c not in df.columns]
    if missing:
        raise located(
            path, 1, f"missing column(s) {', '.join(missing)}; expected: lang train_pairs dev devtest mono tier"
        )
    for i, row in enumerate(df.itertuples(index=False), start=2):
        if not is_code(str(row.lang)):
            raise located(path, i, f"language {row.lang!r} is not a FLORES-200 code such as deu_Latn")
        if str(row.tier) not in TIERS:
            raise located(path, i, f"tier {row.tier!r} for {row.lang}: use one of {', '.join(TIERS)}")
    df["train_pairs"] = pd.to_numeric(df["train_pairs"], errors="coerce").fillna(0).astype(int)
    return df.set_index("lang")


def direction_tier(direction: Direction, stats: pd.DataFrame | None) -> str | None:
    """Tier of the non-English side; for xx-yy the lower-resourced of the two sides."""
    if stats is None:
        return None
    sides = [lang for lang in (direction.src, direction.tgt) if lang != ENGLISH] or [direction.tgt]
    tiers = [stats.at[lang, "tier"] for lang in sides if lang in stats.index]
    if len(tiers) != len(sides):
        return None
    return max(tiers, key=TIERS.index)


def direction_train_pairs(direction: Direction, stats: pd.DataFrame | None) -> int | None:
    if stats is None:
        return None
    sides = [lang for lang in (direction.src, direction.tgt) if lang != ENGLISH] or [direction.tgt]
    if not all(lang in stats.index for lang in sides):
        return None
    return int(min(stats.at[lang, "train_pairs"] for lang in sides))
