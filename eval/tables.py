"""Scoring a whole generation directory, NLLB-style grouped averages, and plain markdown tables.

``scores.csv`` (what ``mt-eval dir`` writes and ``mt-eval report`` reads) has one row per direction::

    direction,src,tgt,group,lang,tier,train_pairs,n_lines,<metric>...

group is eng-xx | xx-eng | xx-yy; lang the non-English side (the target for xx-yy); tier and
train_pairs come from stats.tsv (empty without it); one column per metric (chrf++, spbleu, bleu).
"""

from __future__ import annotations

import json
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
from tqdm import tqdm

from eval import gendir
from eval.metrics import (
    MetricSpec,
    corpus_score,
    read_aligned,
    resolve_metrics,
    signatures,
    spm_model_arg,
    target_notes,
    tokenize_arg,
)
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg

GROUPS = ("eng-xx", "xx-eng", "xx-yy")
GROUP_TITLES = {"eng-xx": "eng_Latn→xx", "xx-eng": "xx→eng_Latn", "xx-yy": "xx→yy", "all": "all"}
METRIC_TITLES = {"chrf++": "chrF++", "spbleu": "spBLEU", "bleu": "BLEU"}  # metric column -> name in text
BASE_COLUMNS = ["direction", "src", "tgt", "group", "lang", "tier", "train_pairs", "n_lines"]


def _score_one(direction: gendir.Direction, hyp: Path, ref: Path, specs: Sequence[MetricSpec]) -> dict[str, float]:
    hyps, refs = read_aligned(hyp, ref)
    if not refs:
        raise UserError(f"{hyp} and {ref} are empty: nothing to score")
    scores: dict[str, float] = {"n_lines": len(hyps)}
    for spec in specs:  # BLEU: tokenised for the target language (eval.metrics.bleu_tokenizer)
        scores[spec.name] = round(corpus_score(hyps, refs, spec.for_target(direction.tgt)[0]).score, 2)
    return scores


def default_workers(n_tasks: int) -> int:
    """Processes for scoring: one for a handful of directions, else up to 8 (chrF++ is ~1 s a direction)."""
    return 1 if n_tasks < 8 else max(1, min(8, os.cpu_count() or 1))


def score_directory(
    gen_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    specs: Sequence[MetricSpec],
    stats: pd.DataFrame | None = None,
    progress: bool = True,
    workers: int = 0,
) -> pd.DataFrame:
    """One row per ``{src}-{tgt}.hyp`` in ``gen_dir``, scored against ``{ref_dir}/{tgt}.*``.

    Directions are scored in ``workers`` processes (0: automatic)."""
    ref_dir = gendir.check_ref_dir(ref_dir)
    tasks = [(d, hyp, gendir.ref_path(ref_dir, d.tgt)) for d, hyp in gendir.find_directions(gen_dir)]
    workers = workers or default_workers(len(tasks))
    scores: dict[str, dict[str, float]] = {}
    # the bar is closed (its line ended) on errors too, so an error message starts a line of its own
    with tqdm(total=len(tasks), desc="scoring", unit="dir", disable=not progress) as bar:
        if workers <= 1:
            for d, hyp, ref in tasks:
                scores[d.name] = _score_one(d, hyp, ref, specs)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_score_one, d, hyp, ref, specs): d for d, hyp, ref in tasks}
                for fut in as_completed(futures):
                    scores[futures[fut].name] = fut.result()
                    bar.update()
    rows = []
    for d, _, _ in tasks:
        rows.append(
            {
                "direction": d.name,
                "src": d.src,
                "tgt": d.tgt,
                "group": d.group,
                "lang": d.lang,
                "tier": gendir.direction_tier(d, stats),
                "train_pairs": gendir.direction_train_pairs(d, stats),
                **scores[d.name],
            }
        )
    df = pd.DataFrame(rows, columns=BASE_COLUMNS + [s.name for s in specs])
    df["train_pairs"] = df["train_pairs"].astype("Int64")
    return df


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in BASE_COLUMNS]


def grouped_averages(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean of each metric per (group, tier), as NLLB reports them.

    Rows: every group in eng-xx, xx-eng, xx-yy that has directions, then ``all``; tiers: ``all`` then
    high/mid/low where the table has tiers. ``n`` counts the directions averaged.
    """
    metrics = list(metrics or metric_columns(df))
    groups = [g for g in GROUPS if (df["group"] == g).any()] + ["all"]
    tiers = ["all"] + [t for t in gendir.TIERS if "tier" in df and (df["tier"] == t).any()]
    rows = []
    for group in groups:
        sub = df if group == "all" else df[df["group"] == group]
        for tier in tiers:
            part = sub if tier == "all" else sub[sub["tier"] == tier]
            row = {"group": group, "tier": tier, "n": len(part)}
            for m in metrics:
                row[m] = round(float(part[m].mean()), 2) if len(part) else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=["group", "tier", "n", *metrics])


def _fmt(value: object, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_NUMERIC = re.compile(r"^([+\-–]?\d|–$|no list$|\[)")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table; ``align`` is l/r/c per column (default: numbers right, text left)."""
    header = [str(h) for h in header]
    cells = [[_fmt(v) for v in row] for row in rows]
    if align is None:
        align = "".join(
            "r" if col and all(_NUMERIC.match(c) for c in col) else "l"
            for col in ([row[i] for row in cells] for i in range(len(header)))
        )
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    for row in cells:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def averages_markdown(avg: pd.DataFrame, metric: str) -> str:
    """One metric's averages as a group × tier table; each cell ``mean (n)``."""
    tiers = list(dict.fromkeys(avg["tier"]))
    rows = []
    for group in dict.fromkeys(avg["group"]):
        sub = avg[avg["group"] == group].set_index("tier")
        cells = []
        for tier in tiers:
            n = int(sub.at[tier, "n"])
            cells.append(f"{sub.at[tier, metric]:.2f} ({n})" if n else "–")
        rows.append([GROUP_TITLES.get(group, group), *cells])
    return markdown_table(["direction", *tiers], rows)


def scores_markdown(df: pd.DataFrame, avg: pd.DataFrame) -> str:
    metrics = metric_columns(df)
    parts = ["# Scores per direction", ""]
    cols = ["direction", "tier", "train_pairs", "n_lines", *metrics]
    parts.append(markdown_table(cols, df[cols].itertuples(index=False)))
    for m in metrics:
        parts += ["", f"## {m} averages (mean over directions; number of directions in brackets)", ""]
        parts.append(averages_markdown(avg, m))
    return "\n".join(parts) + "\n"


def write_scores(
    df: pd.DataFrame, out_dir: str | os.PathLike, sigs: dict[str, str] | None = None, stem: str = "scores"
) -> list[Path]:
    """``{stem}.csv``, ``{stem}_averages.csv``, ``{stem}.md`` and ``{stem}.json`` (metric signatures)
    in ``out_dir``, written atomically."""
    out_dir = Path(out_dir)
    avg = grouped_averages(df)
    paths = [
        out_dir / f"{stem}.csv",
        out_dir / f"{stem}_averages.csv",
        out_dir / f"{stem}.md",
        out_dir / f"{stem}.json",
    ]
    with atomic_write(paths[0]) as fh:
        df.to_csv(fh, index=False)
    with atomic_write(paths[1]) as fh:
        avg.to_csv(fh, index=False)
    with atomic_write(paths[2]) as fh:
        md = scores_markdown(df, avg)
        if sigs:
            md += "\n## Signatures\n\n" + "\n".join(f"- {m}: `{sig}`" for m, sig in sigs.items()) + "\n"
        fh.write(md)
    with atomic_write(paths[3]) as fh:
        json.dump({"signatures": sigs or {}}, fh, indent=1)
    return paths


@dataclass
class DirConfig:
    gen_dir: str = arg(positional=True, metavar="GEN_DIR")
    ref_dir: str = arg(help="split directory with {lang}.{split} references, e.g. CORPUS/devtest", required=True)
    metrics: list[str] = arg(
        [], "chrf++ bleu spbleu (default: chrf++, plus spbleu when a model is known)", nargs="+", metavar="M", type=str
    )
    stats: str | None = arg(None, "stats.tsv for tiers (default: REF_DIR/../stats.tsv)")
    out_dir: str | None = arg(None, "where scores.* go (default: GEN_DIR)")
    workers: int = arg(0, "scoring processes (default: 1 below 8 directions, else up to 8)")  # 0: automatic
    tokenize: str | None = tokenize_arg()  # BLEU tokenizer; None: by each direction's target language
    spm_model: str | None = spm_model_arg()


@dataclass
class DirResult:
    table: pd.DataFrame
    averages: pd.DataFrame
    paths: list[Path]
    notes: list[str]


def evaluate_directory(cfg: DirConfig, progress: bool = True) -> DirResult:
    """Score every direction of a generation directory; write scores.csv/.md and the averages."""
    specs, notes = resolve_metrics(cfg.metrics, cfg.spm_model, cfg.tokenize)
    stats_path = Path(cfg.stats) if cfg.stats else gendir.default_stats_path(cfg.ref_dir)
    stats = gendir.load_stats(stats_path) if stats_path else None
    if stats is None:
        notes.append("no stats.tsv beside the references (pass --stats CORPUS/stats.tsv): no tier averages")
    df = score_directory(cfg.gen_dir, cfg.ref_dir, specs, stats, progress=progress, workers=cfg.workers)
    tgts = sorted(set(df["tgt"]))
    notes += target_notes(specs, tgts)
    paths = write_scores(df, cfg.out_dir or cfg.gen_dir, signatures(specs, tgts))
    return DirResult(df, grouped_averages(df), paths, notes)
