"""``mt-eval report RUN_DIR``: one markdown page with tables and PNG figures, like a page of the NLLB paper.

RUN_DIR layout read (every input optional: a missing one skips its section with a note)::

    RUN_DIR/scores.csv         per-direction scores (mt-eval dir); also looked for in RUN_DIR/gen/
    RUN_DIR/toxicity.csv       per-direction toxicity (mt-eval toxicity --gen-dir); also in RUN_DIR/gen/
    RUN_DIR/train_log.jsonl    training log (mt-train), keys below
    RUN_DIR/stats.tsv          corpus stats (lang train_pairs dev devtest mono tier); or --corpus/--stats;
                               only needed when scores.csv has no tier/train_pairs columns
    RUN_DIR/translate_test.csv translate-test vs zero-shot results (mt-eval translate-test)

Given explicitly (sections that appear only then):

    --baseline B               scores.csv of a baseline system (or its generation directory holding one),
                               e.g. copy-the-source: per-direction delta and how many directions beat it
    --mining DIR               DIR/{lang}/gold.json + mined.tsv of recipes/mine_pair.sh: mined pairs and
                               their precision / recall / F1 against the corpus's hidden gold
    --timings FILE             TSV of ``python -m mt.train.timed``: wall and CPU time and peak memory per step

Written: ``RUN_DIR/report.md`` and ``RUN_DIR/report_figures/*.png``. This module finds the inputs and assembles
the page; ``eval.report_sections`` renders each section, ``eval.plots`` draws the figures.

``train_log.jsonl`` (read by ``eval.train_stats`` with the names ``mt.formats.trainlog`` writes, plus the
spellings of other tools' logs): one JSON object per line; lines that are not JSON objects are skipped. Keys read:

* the x axis: ``update`` (else ``num_updates``, ``step``);
* training loss: ``loss`` (else ``train_loss``) on records that are not validation records;
* validation: mt-train's ``"type": "valid"`` records (``loss``, ``directions: {direction: {loss}}``);
  ``valid_loss`` as a number (overall) or as ``{direction: loss}``; keys
  ``valid_loss/<direction>`` or ``valid/<direction>/loss``; or a record with ``"split": "valid"``
  (or ``"subset"``), ``direction`` (or ``pair``) and ``loss``/``valid_loss``;
* mt-train's stability monitor (``stability`` in train records, ``spike`` and ``rollback`` records): a
  figure of its statistics beside the loss curve (``eval.train_stats``).

``translate_test.csv``: long form ``lang,method,score`` (optional ``task``, ``metric`` - one table per
metric -, ``tier`` - averages per tier -; method e.g. ``zero_shot``, ``translate_test``, ``translate_train``
as ``mt-eval translate-test`` writes them, or ``zero-shot``) or wide form
``lang,zero_shot,translate_test[,translate_train]``; anything else is shown as a plain table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from eval import gendir
from eval.report_sections import (
    FIG_DIR,
    Numbers,
    Section,
    baseline_section,
    mining_section,
    scores_section,
    timings_section,
    toxicity_section,
    training_section,
    translate_test_section,
)
from eval.tables import metric_columns
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg


@dataclass
class ReportConfig:
    run_dir: str = arg(positional=True, metavar="RUN_DIR")
    scores: str | None = arg(None, "scores.csv (default: RUN_DIR/scores.csv, RUN_DIR/gen/scores.csv)")
    toxicity: str | None = arg(None, "toxicity.csv (default: RUN_DIR/toxicity.csv, RUN_DIR/gen/toxicity.csv)")
    train_log: str | None = arg(None, "train_log.jsonl (default: RUN_DIR/train_log.jsonl)")
    stats: str | None = arg(None, "stats.tsv or the corpus directory holding it")
    translate_test: str | None = arg(None, "translate_test.csv (default: RUN_DIR/translate_test.csv)")
    out: str | None = arg(None, "report path (default: RUN_DIR/report.md)")
    baseline: str | None = arg(
        None, "scores.csv of a baseline system, or its generation directory (mt-eval dir output)"
    )
    baseline_name: str | None = arg(None, "name of the baseline in the report (default: its directory's name)")
    mining: str | None = arg(
        None, "directory of per-language mining outputs ({lang}/gold.json, {lang}/mined.tsv)"
    )  # mine_pair.sh outputs
    timings: str | None = arg(None, "TSV of python -m mt.train.timed: wall/CPU time per recipe step")


def _find(run_dir: Path, explicit: str | None, name: str) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        return path
    for cand in (run_dir / name, run_dir / "gen" / name):
        if cand.is_file():
            return cand
    return None


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read as CSV ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; was it written by mt-eval?")
    return df


def _stats_for(cfg: ReportConfig, run_dir: Path) -> pd.DataFrame | None:
    cand = Path(cfg.stats) if cfg.stats else run_dir / "stats.tsv"
    if cand.is_dir():
        cand = cand / "stats.tsv"
    if cand.is_file():
        return gendir.load_stats(cand)
    if cfg.stats:
        raise UserError(f"{cand}: no such stats file (mt-data build writes CORPUS/stats.tsv)")
    return None


def _fill_tiers(df: pd.DataFrame, stats: pd.DataFrame | None) -> pd.DataFrame:
    if stats is None:
        return df
    df = df.copy()
    dirs = [gendir.Direction(s, t) for s, t in zip(df["src"], df["tgt"])]
    if "tier" not in df or df["tier"].isna().all():
        df["tier"] = [gendir.direction_tier(d, stats) for d in dirs]
    if "train_pairs" not in df or df["train_pairs"].isna().all():
        df["train_pairs"] = [gendir.direction_train_pairs(d, stats) for d in dirs]
    return df


def _baseline_table(path_str: str) -> tuple[Path, pd.DataFrame]:
    path = Path(path_str)
    if path.is_dir():
        cand = next((c for c in (path / "scores.csv", path / "gen" / "scores.csv") if c.is_file()), None)
        if cand is None:
            raise UserError(
                f"{path}: no scores.csv for the baseline; score it first: mt-eval dir {path} --ref-dir CORPUS/devtest"
            )
        path = cand
    elif not path.is_file():
        raise UserError(f"{path}: no such baseline scores.csv or directory")
    return path, _read_csv(path, ["direction"])


def write_report(cfg: ReportConfig) -> Path:
    """Render ``report.md`` and its figures from whatever inputs RUN_DIR holds."""
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    out = Path(cfg.out) if cfg.out else run_dir / "report.md"
    fig_dir = out.parent / FIG_DIR
    counter = Numbers()
    sections: list[Section] = []
    used: list[str] = []
    stats = _stats_for(cfg, run_dir)

    scores_path = _find(run_dir, cfg.scores, "scores.csv")
    if scores_path:
        df = _fill_tiers(_read_csv(scores_path, ["direction", "src", "tgt", "group"]), stats)
        if "lang" not in df:
            df["lang"] = [gendir.Direction(s, t).lang for s, t in zip(df["src"], df["tgt"])]
        for col in ("tier", "train_pairs"):
            if col not in df:
                df[col] = None
        if not metric_columns(df):
            raise UserError(f"{scores_path}: no metric columns (chrf++, spbleu, bleu)")
        sections.append(scores_section(df, fig_dir, counter, scores_path))
        used.append(f"`{_rel(scores_path, run_dir)}`")
        if cfg.baseline:
            base_path, base = _baseline_table(cfg.baseline)
            name = cfg.baseline_name or (
                base_path.parent.name if base_path.parent.name != "gen" else base_path.parent.parent.name
            )
            sections.append(baseline_section(df, base, name, fig_dir, counter, base_path))
            used.append(f"`{_rel(base_path, run_dir)}`")
    else:
        sections.append(
            Section(
                "Translation quality",
                ["*Skipped: no scores.csv (run `mt-eval dir GEN_DIR --ref-dir CORPUS/devtest`).*", ""],
            )
        )

    tox_path = _find(run_dir, cfg.toxicity, "toxicity.csv")
    if tox_path:
        tox = _read_csv(
            tox_path, ["direction", "n_lines", "toxic_lines", "toxic_pct", "added_lines", "added_pct", "status"]
        )
        sections.append(toxicity_section(tox, fig_dir, counter))
        used.append(f"`{_rel(tox_path, run_dir)}`")
    else:
        sections.append(
            Section(
                "Added toxicity",
                ["*Skipped: no toxicity.csv (run `mt-eval toxicity --gen-dir ... --toxicity-dir ...`).*", ""],
            )
        )

    log_path = _find(run_dir, cfg.train_log, "train_log.jsonl")
    if log_path:
        sections.append(training_section(log_path, fig_dir, counter))
        used.append(f"`{_rel(log_path, run_dir)}`")
    else:
        sections.append(Section("Training", ["*Skipped: no train_log.jsonl.*", ""]))

    tt_path = _find(run_dir, cfg.translate_test, "translate_test.csv")
    if tt_path:
        sections.append(translate_test_section(tt_path, fig_dir, counter))
        used.append(f"`{_rel(tt_path, run_dir)}`")
    else:
        sections.append(
            Section("Translate-test vs zero-shot", ["*Not run yet: no translate_test.csv in the run directory.*", ""])
        )

    if cfg.mining:
        sections.append(mining_section(Path(cfg.mining), stats, counter))
        used.append(f"`{_rel(Path(cfg.mining), run_dir)}`")
    if cfg.timings:
        timings = Path(cfg.timings)
        if not timings.is_file():
            raise UserError(f"{timings}: no such timings file (python -m mt.train.timed --log FILE writes it)")
        sections.append(timings_section(timings, counter))
        used.append(f"`{_rel(timings, run_dir)}`")

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Evaluation report: {run_dir.resolve().name}",
        "",
        f"Generated {stamp} by `mt-eval report` from {', '.join(used) or 'no inputs'}.",
        "",
    ]
    for i, sec in enumerate(sections, start=1):
        lines += [f"## {i}. {sec.title}", "", *sec.body]
    with atomic_write(out) as fh:
        fh.write("\n".join(lines).rstrip() + "\n")
    return out


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
