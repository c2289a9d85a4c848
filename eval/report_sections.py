"""The sections of ``mt-eval report``: each turns one input into a titled block of markdown (text, numbered
tables, numbered figures drawn by ``eval.plots``). ``eval.report`` finds the inputs and assembles the page."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eval import plots, train_stats
from eval.tables import (
    GROUP_TITLES,
    METRIC_TITLES,
    averages_markdown,
    grouped_averages,
    markdown_table,
    metric_columns,
)
from mt.common.errors import UserError

FIG_DIR = "report_figures"  # beside report.md


@dataclass
class Section:
    title: str
    body: list[str] = field(default_factory=list)


def _figure(rel: str, caption: str, number: int) -> list[str]:
    return [f"![Figure {number}]({rel})", "", f"*Figure {number}: {caption}*", ""]


class Numbers:
    def __init__(self) -> None:
        self.table = 0
        self.figure = 0

    def next_table(self) -> int:
        self.table += 1
        return self.table

    def next_figure(self) -> int:
        self.figure += 1
        return self.figure


def scores_section(df: pd.DataFrame, fig_dir: Path, n: Numbers, source: Path) -> Section:
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
    if plots.plot_by_language(df, main, fig_dir / "quality_by_language.png"):
        sec.body += _figure(
            f"{FIG_DIR}/quality_by_language.png",
            f"{METRIC_TITLES.get(main, main)} per language, sorted by training pairs (largest first) and coloured "
            "by resource tier.",
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


def _per_language_tables(df: pd.DataFrame, metrics: list[str], n: Numbers, source: Path) -> list[str]:
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


def toxicity_section(tox: pd.DataFrame, fig_dir: Path, n: Numbers) -> Section:
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
    if plots.plot_toxicity(tox, fig_dir / "added_toxicity.png"):
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


def training_section(path: Path, fig_dir: Path, n: Numbers) -> Section:
    sec = Section("Training")
    train, valid, skipped = train_stats.parse_train_log(path)
    if train.empty and valid.empty:
        sec.body.append(f"`{path.name}` holds no usable records (keys read: update, loss, valid_loss); skipped.")
        return sec
    if plots.plot_training(train, valid, fig_dir / "training_curve.png"):
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
            f"last validation loss {last['loss'].mean():.3f} "
            f"(update {int(last['update'].iloc[0])}, {len(last)} value(s))"
        )
    sec.body += ["; ".join(facts) + ".", ""]
    if skipped:
        sec.body += [f"{skipped} line(s) of `{path.name}` were not records with an update number and were skipped.", ""]
    sec.body += _stability_lines(train_stats.read_log(path), fig_dir, n)
    return sec


def _stability_lines(log: train_stats.StabilityLog, fig_dir: Path, n: Numbers) -> list[str]:
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


def translate_test_section(path: Path, fig_dir: Path, n: Numbers) -> Section:
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
        if k == 0 and plots.plot_translate_test(wide, methods, fig_dir / "translate_test.png"):
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


def baseline_section(
    df: pd.DataFrame, base: pd.DataFrame, name: str, fig_dir: Path, n: Numbers, source: Path
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
    if plots.plot_against_baseline(scored, metric, name, fig_dir / "against_baseline.png"):
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


def mining_section(mining_dir: Path, stats: pd.DataFrame | None, n: Numbers) -> Section:
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
        "precision / recall / F1 (%) against the corpus's hidden gold "
        "(lines dropped by LID or filters count as missed).",
        "",
        markdown_table(["language", "tier", "seed pairs", "mined", "added", "correct", "gold", "P", "R", "F1"], rows),
        "",
    ]
    return sec


def timings_section(path: Path, n: Numbers) -> Section:
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
