"""``mt-eval ablations ROOT``: collect the runs of ``recipes/ablations.sh`` into tables, mean ± std over seeds.

Layout read (everything optional; a study without runs is left out)::

    ROOT/{study}/{config}/seed{N}/gen/scores.csv     mt-eval dir of one training run (tier column filled)
    ROOT/{study}/{config}/seed{N}/train_log.jsonl    mt-train log: parameter count ("start" record)
    ROOT/{study}/{config}/seed{N}/translate_test.csv mt-eval translate-test of that run's model
    ROOT/mining/{encoder}/report.json                mine-eval bucc (ratio margin vs absolute = cosine)
    ROOT/timings.tsv                                 python -m mt.train.timed: the exact command of every run

A study is any folder with ``{config}/seed{N}/gen/scores.csv`` below it; configs keep the order in which
``timings.tsv`` first mentions them (the order the recipe ran them), else alphabetical. The first config
of a study is its reference: the Δ columns are differences to it. Numbers are chrF++ averages over the
directions of each group (tiers from the corpus stats.tsv, as ``mt-eval dir`` writes them); ± is the
sample standard deviation over seeds (n-1), absent with one seed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from eval import studies
from eval.studies import fmt_mean_std, mean_std
from eval.tables import markdown_table
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg

GROUPS = (("all", "all"), ("eng-xx", "eng→xx"), ("xx-eng", "xx→eng"), ("high", "high"), ("mid", "mid"), ("low", "low"))
_SEED = re.compile(r"^seed(\d+)$")

STUDY_TITLES = {
    "moe": "Dense vs sparse MoE and its regularisers (EOM, FOM, CMR)",
    "temperature": "Sampling temperature (high- vs low-resource trade-off)",
    "adapters": "Hyper-adapters vs per-language adapters at equal parameter count",
    "mixing": "Data mixing: temperature vs UniMax vs UtiliMax at an equal budget",
    "mixing_utility": "UtiliMax's utility runs (short, one language up-weighted)",
    "stability": "Training stability: an unstable run with and without spike rollback",
}
STUDY_NOTES = {
    "moe": "Paper claim (Elbayad et al. 2023; NLLB-200 §6): EOM/FOM/CMR curb MoE over-fitting, about "
    "+1 chrF++ on very low-resource pairs.",
    "temperature": "Paper claim (Shaham et al. 2023; NLLB-200): higher T moves quality from high- to "
    "low-resource directions; T=1 follows the data, T=100 is uniform.",
    "adapters": "Paper claim (Baziotis et al. 2022): hyper-adapters match or beat per-language adapters "
    "with fewer parameters; here both get the same number of adapter parameters.",
    "mixing": "Paper claims (Chung et al. 2023; Held et al. 2025): spreading the budget uniformly with an epoch "
    "cap (UniMax) beats temperature sampling, and utilities from small ablations (UtiliMax) improve on it.",
    "mixing_utility": "The chrF++ gain of each language's directions when that language is up-weighted, over "
    "the `uniform` run (UniMax at the same cap): the utilities `mt-eval utilities` gives UtiliMax.",
    "stability": "Paper claim (Molybog et al. 2023; PaLM's recovery): loss spikes follow Adam updates that stop "
    "tracking the gradient; rolling back and skipping the batches that follow recovers the run.",
}


@dataclass
class AblationConfig:
    root: str = arg(positional=True, metavar="ROOT")
    out: str | None = arg(None, "report path (default: ROOT/report.md)")
    metric: str = arg("chrf++", "score column of scores.csv (default: %(default)s)")
    tt_metric: str = arg("accuracy", "translate-test metric (default: %(default)s)")


def _config_order(root: Path) -> list[str]:
    """Run names ({study}/{config}) in the order timings.tsv first mentions them."""
    path = root / "timings.tsv"
    if not path.is_file():
        return []
    try:
        df = pd.read_csv(path, sep="\t", quoting=3)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return []
    out: list[str] = []
    for step in df.get("step", []):
        parts = str(step).split("/")
        if len(parts) >= 2 and parts[0] + "/" + parts[1] not in out:
            out.append(parts[0] + "/" + parts[1])
    return out


def _commands(root: Path) -> dict[str, str]:
    """The command of each '{study}/{config}/seed{N} train' step with the lowest seed (first recorded among
    equals: seeds may run in parallel), keyed by '{study}/{config}'."""
    path = root / "timings.tsv"
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    try:
        df = pd.read_csv(path, sep="\t", quoting=3)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return out
    best: dict[str, int] = {}
    for step, cmd in zip(df.get("step", []), df.get("command", [])):
        parts = str(step).split()
        if len(parts) == 2 and parts[1] in ("train", "finetune") and parts[0].count("/") == 2:
            study, config, run = parts[0].split("/")
            m = _SEED.match(run)
            seed = int(m.group(1)) if m else 1 << 30
            key = f"{study}/{config}"
            if key not in best or seed < best[key]:
                best[key], out[key] = seed, str(cmd)
    return out


def group_scores(scores: pd.DataFrame, metric: str) -> dict[str, float]:
    """Average of ``metric`` over all directions, per direction group and per tier."""
    if metric not in scores.columns:
        raise UserError(f"no {metric} column in scores.csv (columns: {', '.join(scores.columns)})")
    out = {"all": float(scores[metric].mean())}
    for g in ("eng-xx", "xx-eng"):
        sub = scores[scores["group"] == g]
        out[g] = float(sub[metric].mean()) if len(sub) else math.nan
    for t in ("high", "mid", "low"):
        sub = scores[scores["tier"] == t] if "tier" in scores.columns else scores.iloc[0:0]
        out[t] = float(sub[metric].mean()) if len(sub) else math.nan
    return out


def _params(run: Path) -> int | None:
    log = run / "train_log.jsonl"
    if not log.is_file():
        return None
    with open(log, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("type") == "start" and isinstance(rec.get("params"), int):
                return rec["params"]
    return None


def collect_study(study_dir: Path, metric: str, order: list[str]) -> dict[str, dict]:
    """config -> {"seeds": {seed: group scores}, "params": int|None, "runs": [paths]}."""
    configs: dict[str, dict] = {}
    for cfg_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        seeds = {}
        params = None
        for run in sorted(p for p in cfg_dir.iterdir() if p.is_dir() and _SEED.match(p.name)):
            scores = run / "gen" / "scores.csv"
            if not scores.is_file():
                continue
            df = pd.read_csv(scores)
            seeds[int(_SEED.match(run.name).group(1))] = group_scores(df, metric)
            params = params or _params(run)
        if seeds:
            configs[cfg_dir.name] = {"seeds": seeds, "params": params}
    rank = {name: i for i, name in enumerate(order)}
    key = study_dir.name + "/"
    return dict(sorted(configs.items(), key=lambda kv: (rank.get(key + kv[0], len(rank)), kv[0])))


def study_table(configs: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["config", "seeds", "params", *[title for _, title in GROUPS], "Δ low", "Δ high"]
    rows = []
    ref = None
    for name, c in configs.items():
        stats = {g: mean_std([s[g] for s in c["seeds"].values()]) for g, _ in GROUPS}
        if ref is None:
            ref = stats
        d_low = stats["low"][0] - ref["low"][0]
        d_high = stats["high"][0] - ref["high"][0]
        rows.append(
            [
                name,
                ",".join(str(s) for s in sorted(c["seeds"])),
                f"{c['params'] / 1e6:.2f}M" if c["params"] else "–",
                *[fmt_mean_std(*stats[g]) for g, _ in GROUPS],
                "–" if math.isnan(d_low) else f"{d_low:+.2f}",
                "–" if math.isnan(d_high) else f"{d_high:+.2f}",
            ]
        )
    return header, rows


def per_seed_table(configs: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["config", "seed", *[title for _, title in GROUPS]]
    rows = []
    for name, c in configs.items():
        for seed, s in sorted(c["seeds"].items()):
            rows.append([name, str(seed), *["–" if math.isnan(s[g]) else f"{s[g]:.2f}" for g, _ in GROUPS]])
    return header, rows


def mining_table(root: Path) -> tuple[list[str], list[list[str]]] | None:
    """Per encoder and pair: F1 of the ratio margin vs the absolute (cosine) score, thresholds tuned on the
    tuning split when it has a gold, else the oracle F1."""
    rows = []
    for report in sorted((root / "mining").glob("*/report.json")) if (root / "mining").is_dir() else []:
        try:
            results = json.loads(report.read_text(encoding="utf-8"))["results"]
        except (ValueError, KeyError) as exc:
            raise UserError(f"{report}: not a mine-eval bucc report ({exc!r})") from None
        by_pair: dict[str, dict[str, float]] = {}
        for r in results:
            f1 = r.get("test", r.get("oracle", {})).get("f1")
            if f1 is not None:
                by_pair.setdefault(r["pair"], {})[r["margin"]] = 100 * f1
        enc = report.parent.name
        ratios, cosines = [], []
        for pair, f in sorted(by_pair.items()):
            ratio, cos = f.get("ratio", math.nan), f.get("absolute", math.nan)
            ratios.append(ratio)
            cosines.append(cos)
            rows.append([enc, pair, f"{cos:.2f}", f"{ratio:.2f}", f"{ratio - cos:+.2f}"])
        if len(by_pair) > 1:
            mc, mr = mean_std(cosines)[0], mean_std(ratios)[0]
            rows.append([enc, f"**average ({len(by_pair)})**", f"{mc:.2f}", f"{mr:.2f}", f"{mr - mc:+.2f}"])
    if not rows:
        return None
    return ["encoder", "pair", "cosine F1", "ratio-margin F1", "Δ"], rows


def translate_test_table(root: Path, metric: str) -> tuple[list[str], list[list[str]], int] | None:
    """Per language: zero-shot vs translate-test (mean ± std over the MT models' seeds)."""
    frames, seen = [], set()
    for path in sorted(root.glob("*/*/seed*/translate_test.csv")):
        if path.resolve() in seen:  # a row reused through a symlink (temperature/T5 -> moe/moe_eom)
            continue
        seen.add(path.resolve())
        df = pd.read_csv(path)
        if not {"lang", "method", "score"} <= set(df.columns):
            continue
        if "metric" in df.columns:
            df = df[df["metric"] == metric]
        df = df.assign(run=str(path.resolve().parent))
        frames.append(df)
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    methods = [m for m in ("zero_shot", "translate_test", "translate_train") if m in set(df["method"])]
    tiers = dict(zip(df["lang"], df["tier"])) if "tier" in df.columns else {}
    rows = []
    for lang in sorted(set(df["lang"]), key=lambda x: ({"high": 0, "mid": 1, "low": 2}.get(tiers.get(x), 3), x)):
        sub = df[df["lang"] == lang]
        cells = [fmt_mean_std(*mean_std((100 * sub[sub["method"] == m]["score"]).tolist())) for m in methods]
        gap = "–"
        if {"zero_shot", "translate_test"} <= set(methods):
            per_run = sub.pivot_table(index="run", columns="method", values="score", aggfunc="mean")
            if {"zero_shot", "translate_test"} <= set(per_run.columns):
                d = (100 * (per_run["translate_test"] - per_run["zero_shot"])).dropna().tolist()
                gap = fmt_mean_std(*mean_std(d)) if d else "–"
                if d and not gap.startswith("-"):
                    gap = "+" + gap
        rows.append([lang, str(tiers.get(lang, "–")), *cells, gap])
    return ["lang", "tier", *methods, "translate-test − zero-shot"], rows, df["run"].nunique()


def _study_extras(study_dir: Path, configs: list[str], n_table: int) -> tuple[list[str], int]:
    """The mixing study's epochs table; the stability study's spike table and what preceded the spikes.
    Returns the lines and the number of the last table."""
    tables: list[tuple[str, tuple]] = []
    if study_dir.name == "mixing":
        epochs = studies.epochs_table(study_dir, configs)
        tables.append(("`mixing`: epochs each direction was drawn (mean over seeds).", epochs))
    if study_dir.name == "stability":
        tables.append(
            (
                "`stability`: loss spikes detected and rolled back, final losses (mean ± std over seeds).",
                studies.stability_table(study_dir, configs),
            )
        )
        before = studies.before_spike_table(study_dir, configs)
        tables.append(
            (
                "`stability`: the monitor before the first spike of each run: per statistic, the parameter "
                "group that moved most over the last 3 logged updates.",
                before,
            )
        )
    lines: list[str] = []
    for caption, table in tables:
        if table:
            n_table += 1
            lines += [f"**Table {n_table}.** {caption}", "", markdown_table(*table), ""]
    return lines, n_table


def write_ablations(cfg: AblationConfig) -> Path:
    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(f"{root}: no such ablation directory (recipes/ablations.sh writes it)")
    out = Path(cfg.out) if cfg.out else root / "report.md"
    order = _config_order(root)
    commands = _commands(root)
    lines = [
        f"# Ablations: {root.resolve().name}",
        "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `mt-eval ablations {root}`. "
        f"Every row of a table uses the same data and the same number of updates; {cfg.metric} on devtest, "
        "averaged over the directions of each group; ± is the standard deviation over seeds. "
        "Δ: difference of the mean to the table's first row.",
        "",
    ]
    n_table = 0
    studies = [p for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("*/seed*/gen/scores.csv"))]
    known = [s for s in STUDY_TITLES if (root / s) in studies]
    for study_dir in [root / s for s in known] + [p for p in studies if p.name not in STUDY_TITLES]:
        configs = collect_study(study_dir, cfg.metric, order)
        n_table += 1
        header, rows = study_table(configs)
        lines += [f"## {STUDY_TITLES.get(study_dir.name, study_dir.name)}", ""]
        if study_dir.name in STUDY_NOTES:
            lines += [STUDY_NOTES[study_dir.name], ""]
        lines += [
            f"**Table {n_table}.** `{study_dir.name}`: {cfg.metric} by direction group and tier.",
            "",
            markdown_table(header, rows),
            "",
        ]
        header, rows = per_seed_table(configs)
        lines += ["<details><summary>per seed</summary>", "", markdown_table(header, rows), "", "</details>", ""]
        extra, n_table = _study_extras(study_dir, list(configs), n_table)
        lines += extra
        cmds = [(name, commands.get(f"{study_dir.name}/{name}")) for name in configs]
        if any(c for _, c in cmds):
            lines += [
                "Commands (the lowest seed shown; other seeds differ only in `--seed` and `--save-dir`):",
                "",
                "```bash",
            ]
            lines += [f"# {name}\n{c}" for name, c in cmds if c]
            lines += ["```", ""]
    mining = mining_table(root)
    if mining:
        n_table += 1
        lines += [
            "## Mining: ratio margin vs cosine",
            "",
            "Paper claim (Artetxe & Schwenk 2019): the ratio margin beats a plain cosine threshold. "
            "BUCC-style sets built from the catalogues (`mine-eval bucc --margins ratio,absolute`); "
            "thresholds tuned on the training split, F1 (%) on the test split.",
            "",
            f"**Table {n_table}.** Mining F1 by scoring function.",
            "",
            markdown_table(*mining),
            "",
        ]
    tt = translate_test_table(root, cfg.tt_metric)
    if tt:
        header, rows, n_runs = tt
        n_table += 1
        lines += [
            "## Translate-test vs zero-shot",
            "",
            "Paper claim (Artetxe et al. 2023): with a strong MT model, translate-test beats zero-shot "
            f"transfer. Classification {cfg.tt_metric} (%) per language, {n_runs} MT model(s) (seeds).",
            "",
            f"**Table {n_table}.** Translate-test vs zero-shot.",
            "",
            markdown_table(header, rows),
            "",
        ]
    if n_table == 0:
        lines += ["*No finished runs yet: run recipes/ablations.sh.*", ""]
    with atomic_write(out) as fh:
        fh.write("\n".join(lines).rstrip() + "\n")
    return out
