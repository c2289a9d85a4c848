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

Written: ``RUN_DIR/report.md`` and ``RUN_DIR/report_figures/*.png``.

``train_log.jsonl``: one JSON object per line; lines that are not JSON objects are skipped. Keys read:

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

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from eval import gendir, train_stats
from eval.tables import (
    GROUP_TITLES,
    averages_markdown,
    grouped_averages,
    markdown_table,
    metric_columns,
)
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg

FIG_DIR = "report_figures"
TIER_COLORS = {"high": "#2f6b9a", "mid": "#e39b36", "low": "#c0504d", None: "#9a9a9a"}
METRIC_TITLES = {"chrf++": "chrF++", "spbleu": "spBLEU", "bleu": "BLEU"}


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


@dataclass
class Section:
    title: str
    body: list[str] = field(default_factory=list)


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


# ---------------------------------------------------------------------------------------------------
# plotting


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 8,
            "axes.titlesize": 9,
            "axes.labelsize": 8,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "axes.grid.axis": "y",
            "grid.color": "#dddddd",
            "grid.linewidth": 0.6,
            "axes.axisbelow": True,
            "legend.frameon": False,
            "savefig.dpi": 150,
        }
    )
    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    os.replace(tmp, path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _tier_legend(ax, tiers) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=TIER_COLORS[t], label=t) for t in ("high", "mid", "low") if t in tiers]
    if None in tiers:
        handles.append(Patch(color=TIER_COLORS[None], label="no tier"))
    ax.legend(
        handles=handles,
        title="resource tier",
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=7,
        title_fontsize=7,
    )


def plot_by_language(df: pd.DataFrame, metric: str, path: Path) -> bool:
    """Bars per language sorted by training size (largest first), one panel per English-centric group."""
    groups = [g for g in ("eng-xx", "xx-eng") if (df["group"] == g).any()]
    if not groups:
        return False
    plt = _plt()
    n_max = max(int((df["group"] == g).sum()) for g in groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(6.0, 0.22 * n_max + 1.5), 2.4 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        sub = df[df["group"] == group].copy()
        sub["_size"] = pd.to_numeric(sub["train_pairs"], errors="coerce").fillna(-1)
        sub = sub.sort_values(["_size", "lang"], ascending=[False, True])
        tiers = [t if isinstance(t, str) else None for t in sub["tier"]]
        ax.bar(range(len(sub)), sub[metric], color=[TIER_COLORS.get(t, TIER_COLORS[None]) for t in tiers], width=0.75)
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels(sub["lang"], rotation=90, fontsize=6.5)
        ax.set_xlim(-0.6, len(sub) - 0.4)
        ax.set_ylabel(METRIC_TITLES.get(metric, metric))
        ax.set_title(GROUP_TITLES[group], loc="left")
        _tier_legend(ax, set(tiers))
    axes[-1, 0].set_xlabel("language (sorted by training pairs, largest first)")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_toxicity(tox: pd.DataFrame, path: Path) -> bool:
    """Added toxicity per direction, one panel per direction group (bars labelled by language)."""
    plt = _plt()
    tox = tox.copy()
    if "group" not in tox or "lang" not in tox:
        dirs = [gendir.Direction(*name.split("-", 1)) for name in tox["direction"]]
        tox["group"], tox["lang"] = [d.group for d in dirs], [d.lang for d in dirs]
    groups = [g for g in ("eng-xx", "xx-eng", "xx-yy") if (tox["group"] == g).any()]
    values = pd.to_numeric(tox["added_pct"], errors="coerce")
    top = max(float(values.max()) * 1.2 if values.notna().any() else 0.0, 1.0)
    n_max = max(int((tox["group"] == g).sum()) for g in groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(3.0, 0.22 * n_max + 1.5), 2.2 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        sub = tox[tox["group"] == group].sort_values("direction")
        labels = sub["lang"] if group != "xx-yy" else sub["direction"]
        pct = pd.to_numeric(sub["added_pct"], errors="coerce")
        xs = list(range(len(sub)))
        ax.bar(xs, pct.fillna(0.0), color="#c0504d", width=0.75)
        for x, missing in zip(xs, pct.isna()):
            if missing:  # no list: a hatched stub and a label, never a zero bar
                ax.bar([x], [top * 0.06], width=0.75, color="none", hatch="//", edgecolor=TIER_COLORS[None])
                ax.text(x, top * 0.08, "no list", rotation=90, ha="center", va="bottom", fontsize=6, color="#666666")
        ax.set_ylim(0, top)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=90, fontsize=6.5)
        ax.set_xlim(-0.6, len(sub) - 0.4)
        ax.set_ylabel("added toxicity (%)")
        ax.set_title(GROUP_TITLES[group], loc="left")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_training(train: pd.DataFrame, valid: pd.DataFrame, path: Path) -> bool:
    if train.empty and valid.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    if not train.empty:
        ax.plot(train["update"], train["loss"], color="#9a9a9a", linewidth=0.8, label="train")
    if not valid.empty:
        per_dir = valid[valid["direction"] != "all"]
        for _, part in per_dir.groupby("direction"):
            ax.plot(part["update"], part["loss"], color="#2f6b9a", alpha=0.25, linewidth=0.7)
        mean = (
            valid[valid["direction"] == "all"]
            if (valid["direction"] == "all").any()
            else per_dir.groupby("update", as_index=False)["loss"].mean()
        )
        ax.plot(
            mean["update"],
            mean["loss"],
            color="#2f6b9a",
            linewidth=1.6,
            marker="o",
            markersize=2.5,
            label="valid" if (valid["direction"] == "all").any() else "valid (mean over directions)",
        )
        if not per_dir.empty:
            ax.plot([], [], color="#2f6b9a", alpha=0.25, linewidth=0.7, label="valid, per direction")
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    ax.grid(True, axis="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_translate_test(wide: pd.DataFrame, methods: list[str], path: Path) -> bool:
    plt = _plt()
    n = len(wide)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.3 * n * len(methods) + 1.5), 2.6))
    width = 0.8 / len(methods)
    palette = ["#9a9a9a", "#2f6b9a", "#e39b36", "#c0504d"]
    for i, method in enumerate(methods):
        ax.bar(
            [x + (i - (len(methods) - 1) / 2) * width for x in range(n)],
            wide[method],
            width=width,
            color=palette[i % len(palette)],
            label=method,
        )
    ax.set_xticks(range(n))
    ax.set_xticklabels(wide.index, rotation=90 if n > 6 else 0, fontsize=6.5)
    ax.set_ylabel("score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


# ---------------------------------------------------------------------------------------------------
# inputs


def parse_train_log(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(train: update, loss), (valid: update, direction, loss) and the number of skipped lines."""
    train, valid, skipped = [], [], 0
    with open(path, encoding="utf-8-sig", errors="replace") as fh:  # -sig: a byte-order mark breaks line 1's JSON
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if not isinstance(rec, dict):
                skipped += 1
                continue
            step = next((rec[k] for k in ("update", "num_updates", "step") if _is_num(rec.get(k))), None)
            if step is None:
                skipped += 1
                continue
            found_valid = _valid_entries(rec)
            for direction, loss in found_valid:
                valid.append({"update": step, "direction": direction, "loss": loss})
            if not found_valid and str(rec.get("split", rec.get("subset", "train"))) == "train":
                loss = next((rec[k] for k in ("loss", "train_loss") if _is_num(rec.get(k))), None)
                if loss is not None:
                    train.append({"update": step, "loss": loss})
    return (
        pd.DataFrame(train, columns=["update", "loss"]).sort_values("update"),
        pd.DataFrame(valid, columns=["update", "direction", "loss"]).sort_values("update"),
        skipped,
    )


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _valid_entries(rec: dict) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if rec.get("type") == "valid":  # mt-train's own records (mt.formats.trainlog): overall loss + per direction
        if _is_num(rec.get("loss")):
            out.append(("all", rec["loss"]))
        for k, v in (rec.get("directions") if isinstance(rec.get("directions"), dict) else {}).items():
            if isinstance(v, dict) and _is_num(v.get("loss")):
                out.append((str(k), v["loss"]))
        return out
    split = str(rec.get("split", rec.get("subset", "")))
    if split in ("valid", "dev", "validation"):
        loss = next((rec[k] for k in ("valid_loss", "loss") if _is_num(rec.get(k))), None)
        if loss is not None:
            out.append((str(rec.get("direction", rec.get("pair", "all"))), loss))
        return out
    vl = rec.get("valid_loss")
    if _is_num(vl):
        out.append(("all", vl))
    elif isinstance(vl, dict):
        out += [(str(k), v) for k, v in vl.items() if _is_num(v)]
    valid = rec.get("valid")
    if isinstance(valid, dict):
        for k, v in valid.items():
            if _is_num(v):
                out.append((str(k), v))
            elif isinstance(v, dict) and _is_num(v.get("loss")):
                out.append((str(k), v["loss"]))
    for key, v in rec.items():
        if key.startswith("valid_loss/") and _is_num(v):
            out.append((key.split("/", 1)[1], v))
        elif key.startswith("valid/") and key.endswith("/loss") and _is_num(v):
            out.append((key[len("valid/") : -len("/loss")], v))
    return out


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


# ---------------------------------------------------------------------------------------------------
# sections


def _figure(rel: str, caption: str, number: int) -> list[str]:
    return [f"![Figure {number}]({rel})", "", f"*Figure {number}: {caption}*", ""]


class _Counter:
    def __init__(self) -> None:
        self.table = 0
        self.figure = 0

    def next_table(self) -> int:
        self.table += 1
        return self.table

    def next_figure(self) -> int:
        self.figure += 1
        return self.figure


def _scores_section(df: pd.DataFrame, fig_dir: Path, n: _Counter, source: Path) -> Section:
    sec = Section("Translation quality")
    metrics = metric_columns(df)
    main = "chrf++" if "chrf++" in metrics else metrics[0]
    avg = grouped_averages(df, metrics)
    for m in metrics:
        t = n.next_table()
        sec.body += [
            f"**Table {t}.** Average {METRIC_TITLES.get(m, m)} over translation directions, by direction "
            f"group and resource tier of the non-English side; number of directions in brackets.",
            "",
            averages_markdown(avg, m),
            "",
        ]
    if plot_by_language(df, main, fig_dir / "quality_by_language.png"):
        sec.body += _figure(
            f"{FIG_DIR}/quality_by_language.png",
            f"{METRIC_TITLES.get(main, main)} per language, sorted by training pairs (largest first) and coloured by resource tier.",
            n.next_figure(),
        )
    sec.body += _per_language_tables(df, metrics, n, source)
    sigs = _signatures(source)
    if sigs:
        sec.body += ["Signatures: " + "; ".join(f"{METRIC_TITLES.get(m, m)} `{sig}`" for m, sig in sigs.items()), ""]
    return sec


def _signatures(scores_csv: Path) -> dict[str, str]:
    sidecar = scores_csv.with_suffix(".json")
    try:
        return dict(json.loads(sidecar.read_text(encoding="utf-8")).get("signatures", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _per_language_tables(df: pd.DataFrame, metrics: list[str], n: _Counter, source: Path) -> list[str]:
    """English-centric scores as one row per language (eng→xx and xx→eng side by side, like NLLB's
    appendix), largest training size first; non-English directions in a table of their own."""
    body: list[str] = []
    centric = df[df["group"].isin(["eng-xx", "xx-eng"])]
    if len(centric):
        langs = centric.drop_duplicates("lang").copy()
        langs["_size"] = pd.to_numeric(langs["train_pairs"], errors="coerce").fillna(-1)
        langs = langs.sort_values(["_size", "lang"], ascending=[False, True])
        by_key = {(r["group"], r["lang"]): r for r in centric.to_dict("records")}
        header = ["language", "tier", "train pairs"]
        for m in metrics:
            header += [f"{METRIC_TITLES.get(m, m)} eng→xx", f"{METRIC_TITLES.get(m, m)} xx→eng"]
        rows = []
        for lang_row in langs.itertuples(index=False):
            row = [lang_row.lang, lang_row.tier, lang_row.train_pairs]
            for m in metrics:
                for group in ("eng-xx", "xx-eng"):
                    hit = by_key.get((group, lang_row.lang))
                    row.append(hit[m] if hit is not None else None)
            rows.append(row)
        t = n.next_table()
        body += [
            f"**Table {t}.** Scores per language, English-centric directions ({len(centric)} directions; "
            f"`{source.name}`), largest training size first.",
            "",
            markdown_table(header, rows),
            "",
        ]
    other = df[df["group"] == "xx-yy"].sort_values("direction")
    if len(other):
        cols = ["direction", "tier", *metrics]
        t = n.next_table()
        body += [
            f"**Table {t}.** Scores of non-English directions (tier of the lower-resourced side).",
            "",
            markdown_table(cols, other[cols].itertuples(index=False)),
            "",
        ]
    return body


def _toxicity_section(tox: pd.DataFrame, fig_dir: Path, n: _Counter) -> Section:
    sec = Section("Added toxicity")
    measured = tox[tox["added_pct"].notna()]
    if len(measured):
        mean = measured["added_pct"].mean()
        worst = measured.sort_values("added_pct", ascending=False).iloc[0]
        highest = f"; highest: {worst['direction']} ({worst['added_pct']:.2f}%)" if worst["added_pct"] > 0 else ""
        sec.body += [
            f"Added toxicity (ETOX-style word-list matching) averages {mean:.2f}% of lines over "
            f"{len(measured)} directions with lists on both sides{highest}.",
            "",
        ]
    no_list = len(tox) - len(measured)
    if no_list:
        sec.body += [f"{no_list} direction(s) lack a word list on one side and are reported as *no list*, not 0.", ""]
    if plot_toxicity(tox, fig_dir / "added_toxicity.png"):
        sec.body += _figure(
            f"{FIG_DIR}/added_toxicity.png",
            "Added toxicity per direction: lines whose translation holds more listed terms than the source. "
            "Hatched: no list for one side.",
            n.next_figure(),
        )

    def cell(count, pct) -> str:
        if pd.isna(count):
            return "no list"
        return f"{int(count)} ({float(pct):.2f}%)"

    rows = [
        [r.direction, int(r.n_lines), cell(r.toxic_lines, r.toxic_pct), cell(r.added_lines, r.added_pct), r.status]
        for r in tox.sort_values("direction").itertuples(index=False)
    ]
    t = n.next_table()
    sec.body += [
        f"**Table {t}.** Toxic lines (a target-list term) and lines with added toxicity, per direction.",
        "",
        markdown_table(["direction", "lines", "toxic lines", "added toxicity", "lists"], rows),
        "",
    ]
    return sec


def _training_section(path: Path, fig_dir: Path, n: _Counter) -> Section:
    sec = Section("Training")
    train, valid, skipped = parse_train_log(path)
    if train.empty and valid.empty:
        sec.body.append(f"`{path.name}` holds no usable records (keys read: update, loss, valid_loss); skipped.")
        return sec
    if plot_training(train, valid, fig_dir / "training_curve.png"):
        sec.body += _figure(
            f"{FIG_DIR}/training_curve.png",
            "Training loss and validation loss per update (thin lines: individual directions).",
            n.next_figure(),
        )
    facts = []
    if not train.empty:
        facts.append(f"{int(train['update'].max())} updates, final training loss {train['loss'].iloc[-1]:.3f}")
    if not valid.empty:
        last = valid[valid["update"] == valid["update"].max()]
        facts.append(
            f"last validation loss {last['loss'].mean():.3f} (update {int(last['update'].iloc[0])}, {len(last)} value(s))"
        )
    sec.body += ["; ".join(facts) + ".", ""]
    if skipped:
        sec.body += [f"{skipped} line(s) of `{path.name}` were not records with an update number and were skipped.", ""]
    sec.body += _stability_lines(train_stats.read_log(path), fig_dir, n)
    return sec


def _stability_lines(log: train_stats.StabilityLog, fig_dir: Path, n: _Counter) -> list[str]:
    """mt-train's stability monitor: the statistics beside the loss, and the spikes and rollbacks."""
    if not train_stats.plot_stability(log, fig_dir / "training_stability.png"):
        return []
    lines = _figure(
        f"{FIG_DIR}/training_stability.png",
        "Training loss beside Adam's statistics per parameter group (mt-train's stability monitor, sampled "
        "coordinates): gradient RMS, share of coordinates whose sqrt(v̂) is under eps, update RMS relative to "
        "the learning rate, bimodality of the normalised update (1/3 Gaussian, 1 = ±1), cosine between update "
        "and gradient. Red: detected loss spikes; faded: updates abandoned by a rollback.",
        n.next_figure(),
    )
    eps = log.episodes()
    ups = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in eps[:12]) + (" ..." if len(eps) > 12 else "")
    facts = [f"{len(log.spikes)} spiking update(s) in {len(eps)} episode(s)" + (f" (updates {ups})" if eps else "")]
    if log.rollbacks:
        facts.append(
            f"{len(log.rollbacks)} rollback(s): "
            + ", ".join(f"{r['spike']} -> {r['update']} (skip {r['skip']})" for r in log.rollbacks)
        )
    if log.monitor_ms is not None:
        facts.append(f"the monitor took {log.monitor_ms:.1f} ms per logged update")
    return lines + ["; ".join(facts) + ".", ""]


def _method_key(m: object) -> str:
    return str(m).lower().replace("-", "_").replace(" ", "_")


def _tt_table(wide: pd.DataFrame, methods: list, tiers: dict) -> tuple[list[str], list[list]]:
    """Rows per language (+ averages overall and per tier), with the translate-test - zero-shot gap."""
    keys = {_method_key(m): m for m in methods}
    gap = (keys["translate_test"], keys["zero_shot"]) if {"translate_test", "zero_shot"} <= set(keys) else None
    header = ["lang", *(["tier"] if tiers else []), *map(str, methods), *(["TT − ZS"] if gap else [])]

    def row(name, frame: pd.DataFrame, tier=None) -> list:
        out = [name, *([tier or "–"] if tiers else []), *(frame[m].mean() for m in methods)]
        if gap:
            d = (frame[gap[0]] - frame[gap[1]]).mean()
            out.append("–" if pd.isna(d) else f"{d:+.2f}")
        return out

    rows = [row(idx, wide.loc[[idx]], tiers.get(idx)) for idx in wide.index]
    complete = wide.dropna()  # averages compare systems on the same languages: those every system ran on
    if len(complete) > 1:
        rows.append(row(f"**average ({len(complete)})**", complete))
        for tier in ("high", "mid", "low"):
            sub = complete[[tiers.get(i) == tier for i in complete.index]]
            if len(sub) and len(sub) < len(complete):
                rows.append(row(f"**{tier} ({len(sub)})**", sub, tier))
    return header, rows


def _translate_test_section(path: Path, fig_dir: Path, n: _Counter) -> Section:
    """``mt-eval translate-test`` output (long form with ``metric`` and ``tier`` columns) or any long/wide
    table of per-language scores; methods are columns, zero-shot first, with the translate-test gap."""
    sec = Section("Translate-test vs zero-shot")
    df = pd.read_csv(path)
    tables: list[tuple[str, pd.DataFrame]] = []
    tiers: dict = {}
    if {"lang", "method", "score"} <= set(df.columns):
        if "tier" in df.columns:
            tiers = {k: v for k, v in zip(df["lang"], df["tier"]) if isinstance(v, str) and v}
        index = ["lang"] + [c for c in ("task",) if c in df.columns and df[c].nunique() > 1]
        metrics = list(dict.fromkeys(df["metric"])) if "metric" in df.columns else [None]
        for metric in metrics:
            sub = df if metric is None else df[df["metric"] == metric]
            wide = sub.pivot_table(index=index, columns="method", values="score", aggfunc="mean")
            if len(index) > 1:
                wide.index = ["/".join(map(str, i)) for i in wide.index]
            tables.append((metric or "score", wide))
    elif {"lang", "zero_shot", "translate_test"} <= set(df.columns):
        cols = ["zero_shot", "translate_test"] + (["translate_train"] if "translate_train" in df.columns else [])
        tables.append(("score", df.set_index("lang")[cols]))
    if not tables:
        t = n.next_table()
        sec.body += [
            f"**Table {t}.** `{path.name}` as given.",
            "",
            markdown_table(list(df.columns), df.itertuples(index=False)),
            "",
        ]
        return sec
    order = {"zero_shot": 0, "translate_test": 1, "translate_train": 2}
    for k, (metric, wide) in enumerate(tables):
        if metric in ("accuracy", "macro_f1") and (wide.abs().max().max() or 0) <= 1:
            wide = wide * 100  # mt-eval translate-test writes fractions; tables show %
        methods = sorted(wide.columns, key=lambda m: (order.get(_method_key(m), 3), str(m)))  # baseline first
        wide = wide[methods]
        if k == 0 and plot_translate_test(wide, methods, fig_dir / "translate_test.png"):
            sec.body += _figure(
                f"{FIG_DIR}/translate_test.png",
                f"Translate-test against zero-shot, per language ({metric}).",
                n.next_figure(),
            )
        header, rows = _tt_table(wide, methods, tiers)
        t = n.next_table()
        what = "" if metric == "score" else f" ({metric}{', %' if metric in ('accuracy', 'macro_f1') else ''})"
        sec.body += [
            f"**Table {t}.** Translate-test against zero-shot{what}; TT − ZS is the translate-test gain.",
            "",
            markdown_table(header, rows),
            "",
        ]
    if any(len(w.dropna()) < len(w) for _, w in tables):
        sec.body += ["Averages are over the languages every system ran on.", ""]
    return sec


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


def plot_against_baseline(rows: pd.DataFrame, metric: str, name: str, path: Path) -> bool:
    """Model and baseline side by side per language, one panel per English-centric group."""
    groups = [g for g in ("eng-xx", "xx-eng") if (rows["group"] == g).any()]
    if not groups:
        return False
    plt = _plt()
    n_max = max(int((rows["group"] == g).sum()) for g in groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(4.0, 0.35 * n_max + 1.8), 2.3 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        sub = rows[rows["group"] == group]
        xs = range(len(sub))
        ax.bar([x - 0.2 for x in xs], sub[metric], width=0.4, color="#2f6b9a", label="model")
        ax.bar([x + 0.2 for x in xs], sub["baseline"], width=0.4, color="#9a9a9a", label=name)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(sub["lang"], rotation=90, fontsize=6.5)
        ax.set_xlim(-0.6, len(sub) - 0.4)
        ax.set_ylabel(METRIC_TITLES.get(metric, metric))
        ax.set_title(GROUP_TITLES[group], loc="left")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1, 0].set_xlabel("language (sorted by training pairs, largest first)")
    fig.tight_layout()
    _save(fig, path)
    return True


def _baseline_section(
    df: pd.DataFrame, base: pd.DataFrame, name: str, fig_dir: Path, n: _Counter, source: Path
) -> Section:
    """Every direction of the model against the same direction of a baseline system (e.g. copy-the-source)."""
    sec = Section(f"Against the baseline ({name})")
    shared = [m for m in metric_columns(df) if m in base.columns]
    if not shared:
        sec.body += [
            f"*Skipped: `{source}` has none of the metrics of the model's scores ({', '.join(metric_columns(df))}).*",
            "",
        ]
        return sec
    metric = "chrf++" if "chrf++" in shared else shared[0]
    title = METRIC_TITLES.get(metric, metric)
    rows = df.merge(base[["direction", metric]].rename(columns={metric: "baseline"}), on="direction", how="left")
    rows["_size"] = pd.to_numeric(rows["train_pairs"], errors="coerce").fillna(-1)
    rows["_g"] = rows["group"].map({g: i for i, g in enumerate(("eng-xx", "xx-eng", "xx-yy"))})
    rows = rows.sort_values(["_g", "_size", "lang"], ascending=[True, False, True])
    rows["delta"] = rows[metric] - rows["baseline"]
    scored = rows[rows["baseline"].notna()]
    wins = scored[scored["delta"] > 0]
    parts = []
    for group in ("eng-xx", "xx-eng", "xx-yy"):
        g = scored[scored["group"] == group]
        if len(g):
            parts.append(f"{GROUP_TITLES[group]}: {int((g['delta'] > 0).sum())}/{len(g)}")
    summary = (
        f"The model beats {name} in **{len(wins)} of {len(scored)} directions** on {title} "
        f"({'; '.join(parts)}); mean difference {scored['delta'].mean():+.2f}."
    )
    sec.body += [summary, ""]
    losers = scored[scored["delta"] <= 0]
    if len(losers):
        worst = ", ".join(f"{r.direction} ({r.delta:+.2f})" for r in losers.itertuples(index=False))
        sec.body += [f"Not better than {name}: {worst}.", ""]
    missing = rows[rows["baseline"].isna()]
    if len(missing):
        sec.body += [f"{len(missing)} direction(s) have no baseline score: {', '.join(missing['direction'])}.", ""]
    if plot_against_baseline(scored, metric, name, fig_dir / "against_baseline.png"):
        sec.body += _figure(
            f"{FIG_DIR}/against_baseline.png", f"{title} of the model and of {name} per language.", n.next_figure()
        )
    t = n.next_table()
    table_rows = [
        [r.direction, r.tier, r.train_pairs, r[metric], r.baseline, "–" if pd.isna(r.delta) else f"{r.delta:+.2f}"]
        for _, r in rows.iterrows()
    ]
    sec.body += [
        f"**Table {t}.** {title} per direction: the model, {name} (`{source}`), and the difference.",
        "",
        markdown_table(["direction", "tier", "train pairs", "model", name, "Δ"], table_rows),
        "",
    ]
    return sec


def _mining_section(mining_dir: Path, stats: pd.DataFrame | None, n: _Counter) -> Section:
    """Per language: pairs mined from the hidden-parallel mono files and their quality against the gold."""
    sec = Section("Bitext mining")
    if not mining_dir.is_dir():
        raise UserError(f"{mining_dir}: no such mining directory (recipes/mine_pair.sh writes one folder per language)")
    sizes = stats["train_pairs"].to_dict() if stats is not None else {}  # load_stats indexes by lang
    tiers = stats["tier"].to_dict() if stats is not None else {}
    rows, tot_mined, tot_correct, tot_gold = [], 0, 0, 0
    for sub in sorted(p for p in mining_dir.iterdir() if p.is_dir()):
        gold_path, mined_path = sub / "gold.json", sub / "mined.tsv"
        if not gold_path.is_file() and not mined_path.is_file():
            continue
        seed = sizes.get(sub.name)
        if gold_path.is_file():
            try:
                res = json.loads(gold_path.read_text(encoding="utf-8"))
                al = res["all"]
                mined, correct, gold = int(res["mined"]), int(al["correct"]), int(res["gold"])
                prf = [100 * al["precision"], 100 * al["recall"], 100 * al["f1"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{gold_path}: not a mine-eval gold result ({exc!r}); re-run mine-eval gold") from None
            tot_correct, tot_gold = tot_correct + correct, tot_gold + gold
        else:
            with open(mined_path, encoding="utf-8", errors="replace") as fh:
                mined = sum(1 for line in fh if line.strip())
            correct, gold, prf = None, None, [None, None, None]
        tot_mined += mined
        share = f"+{100 * mined / seed:.1f}%" if seed else "–"
        rows.append([sub.name, tiers.get(sub.name), seed, mined, share, correct, gold, *prf])
    if not rows:
        sec.body += [f"*Skipped: no {{lang}}/gold.json or mined.tsv under `{mining_dir}`.*", ""]
        return sec
    if tot_gold:
        sec.body += [
            f"{tot_mined} pairs were mined from the monolingual side of {len(rows)} languages and added to the "
            f"training bitext; {tot_correct} of them are hidden gold pairs (precision "
            f"{100 * tot_correct / max(tot_mined, 1):.1f}%, recall {100 * tot_correct / tot_gold:.1f}% of {tot_gold}).",
            "",
        ]
    t = n.next_table()
    sec.body += [
        f"**Table {t}.** Mined pairs per language (`{mining_dir}`): how many, their share of the seed bitext, and "
        "precision / recall / F1 (%) against the corpus's hidden gold (lines dropped by LID or filters count as missed).",
        "",
        markdown_table(["language", "tier", "seed pairs", "mined", "added", "correct", "gold", "P", "R", "F1"], rows),
        "",
    ]
    return sec


def _timings_section(path: Path, n: _Counter) -> Section:
    """Wall and CPU time per recipe step (``python -m mt.train.timed``), summed over re-runs."""
    sec = Section("Run time")
    try:
        df = pd.read_csv(path, sep="\t", quoting=3)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read as TSV ({exc})") from None
    missing = [c for c in ("step", "wall_s", "cpu_s") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; was it written by python -m mt.train.timed?")
    if df.empty:
        sec.body += [f"*Skipped: `{path.name}` holds no steps.*", ""]
        return sec
    order = list(dict.fromkeys(df["step"]))
    rows = []
    for step in order:
        g = df[df["step"] == step]
        failed = int((pd.to_numeric(g.get("rc", 0), errors="coerce").fillna(0) != 0).sum())
        rss = pd.to_numeric(g["max_rss_mb"], errors="coerce").max() if "max_rss_mb" in g else None
        runs = f"{len(g)}" + (f" ({failed} stopped/failed)" if failed else "")
        rows.append([step, g["wall_s"].sum(), g["cpu_s"].sum(), rss, runs])
    wall, cpu = df["wall_s"].sum(), df["cpu_s"].sum()
    threads = sorted({str(t) for t in df.get("threads", pd.Series(dtype=str)).dropna() if str(t) not in ("", "nan")})
    sec.body += [
        f"Total: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU"
        + (f" (OMP_NUM_THREADS={', '.join(threads)})" if threads else "")
        + ". CPU time counts every process of a step; on a shared machine wall time grows with other load, "
        "CPU time much less.",
        "",
    ]
    t = n.next_table()
    rows.append(["**total**", wall, cpu, None, f"{len(df)}"])
    sec.body += [
        f"**Table {t}.** Time per step (`{path.name}`; a step run more than once, e.g. resumed, is summed).",
        "",
        markdown_table(
            ["step", "wall (s)", "CPU (s)", "peak RSS (MB)", "runs"],
            [
                [r[0], f"{r[1]:.1f}", f"{r[2]:.1f}", "–" if r[3] is None or pd.isna(r[3]) else f"{r[3]:.0f}", r[4]]
                for r in rows
            ],
        ),
        "",
    ]
    return sec


def write_report(cfg: ReportConfig) -> Path:
    """Render ``report.md`` and its figures from whatever inputs RUN_DIR holds."""
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    out = Path(cfg.out) if cfg.out else run_dir / "report.md"
    fig_dir = out.parent / FIG_DIR
    counter = _Counter()
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
        sections.append(_scores_section(df, fig_dir, counter, scores_path))
        used.append(f"`{_rel(scores_path, run_dir)}`")
        if cfg.baseline:
            base_path, base = _baseline_table(cfg.baseline)
            name = cfg.baseline_name or (
                base_path.parent.name if base_path.parent.name != "gen" else base_path.parent.parent.name
            )
            sections.append(_baseline_section(df, base, name, fig_dir, counter, base_path))
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
        sections.append(_toxicity_section(tox, fig_dir, counter))
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
        sections.append(_training_section(log_path, fig_dir, counter))
        used.append(f"`{_rel(log_path, run_dir)}`")
    else:
        sections.append(Section("Training", ["*Skipped: no train_log.jsonl.*", ""]))

    tt_path = _find(run_dir, cfg.translate_test, "translate_test.csv")
    if tt_path:
        sections.append(_translate_test_section(tt_path, fig_dir, counter))
        used.append(f"`{_rel(tt_path, run_dir)}`")
    else:
        sections.append(
            Section("Translate-test vs zero-shot", ["*Not run yet: no translate_test.csv in the run directory.*", ""])
        )

    if cfg.mining:
        sections.append(_mining_section(Path(cfg.mining), stats, counter))
        used.append(f"`{_rel(Path(cfg.mining), run_dir)}`")
    if cfg.timings:
        timings = Path(cfg.timings)
        if not timings.is_file():
            raise UserError(f"{timings}: no such timings file (python -m mt.train.timed --log FILE writes it)")
        sections.append(_timings_section(timings, counter))
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
