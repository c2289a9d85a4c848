"""What the ``mixing`` and ``stability`` studies of ``recipes/ablations.sh`` add to ``mt-eval ablations``,
and ``mt-eval utilities``: UtiliMax's per-direction utilities from short up-weighted runs.

Utilities (``mt-eval utilities STUDY_DIR --reference CONFIG``): ``STUDY_DIR/{config}/seed{N}/gen/scores.csv``
where each config ``up_{X}`` is a short run that up-weighted ``X`` (a language: every direction with it
on either side, or one ``src-tgt`` direction) and ``CONFIG`` the same run without up-weighting. The
utility of a direction is its chrF++ in the up-weighted run minus its chrF++ in the reference run of the
same seed, averaged over seeds (std beside it). Written as ``direction<TAB>utility<TAB>std<TAB>seeds``,
the file ``mt-train --sampling-method utilimax --utilities`` reads.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eval import train_stats
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg

_SEED = re.compile(r"^seed(\d+)$")


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std over seeds, ignoring missing (None/NaN) runs; std None below two values."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def fmt_mean_std(mean: float, std: float | None, digits: int = 2) -> str:
    """``mean ± std`` for a table cell; ``–`` when no run had a value."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _seed_runs(config_dir: Path) -> dict[int, Path]:
    runs = [p for p in sorted(config_dir.iterdir()) if p.is_dir() and _SEED.match(p.name)]
    return {int(_SEED.match(p.name).group(1)): p for p in runs}


def _log_records(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# --- utilities ------------------------------------------------------------------------------------
@dataclass
class UtilitiesConfig:
    study_dir: str = arg(positional=True, metavar="STUDY_DIR")
    reference: str = arg(help="the config without up-weighting (e.g. uniform)", required=True)
    out: str = arg(help="utilities file to write", required=True)
    metric: str = arg("chrf++", "score column of scores.csv (default: %(default)s)")


def _scores(run: Path, metric: str) -> dict[str, float]:
    path = run / "gen" / "scores.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path)
    if metric not in df.columns or "direction" not in df.columns:
        raise UserError(f"{path}: no {metric} / direction column (columns: {', '.join(df.columns)})")
    return dict(zip(df["direction"].astype(str), df[metric].astype(float)))


def _up_weighted(config: str, direction: str) -> bool:
    """Whether run ``up_{X}`` up-weighted ``direction`` (X a language or a src-tgt direction)."""
    target = config[len("up_") :]
    return target == direction if "-" in target else target in direction.split("-")


def utilities_from_runs(study_dir: Path, reference: str, metric: str = "chrf++") -> pd.DataFrame:
    """direction, utility (mean gain over seeds), std, seeds: see the module docstring."""
    ref_dir = study_dir / reference
    if not ref_dir.is_dir():
        raise UserError(f"{ref_dir}: no such reference config (the short run without up-weighting)")
    refs = {seed: _scores(run, metric) for seed, run in _seed_runs(ref_dir).items()}
    gains: dict[str, list[float]] = {}
    for cfg_dir in sorted(p for p in study_dir.iterdir() if p.is_dir() and p.name.startswith("up_")):
        for seed, run in _seed_runs(cfg_dir).items():
            ref, got = refs.get(seed, {}), _scores(run, metric)
            for direction, score in got.items():
                if _up_weighted(cfg_dir.name, direction) and direction in ref:
                    gains.setdefault(direction, []).append(score - ref[direction])
    if not gains:
        raise UserError(f"{study_dir}: no finished up_* run with a matching seed of {reference} (gen/scores.csv)")
    rows = []
    for direction, values in sorted(gains.items()):
        mean, std = mean_std(values)
        rows.append(
            {"direction": direction, "utility": mean, "std": std if std is not None else math.nan, "seeds": len(values)}
        )
    return pd.DataFrame(rows)


def write_utilities(cfg: UtilitiesConfig) -> Path:
    study = Path(cfg.study_dir)
    if not study.is_dir():
        raise UserError(f"{study}: no such study directory (recipes/ablations.sh mixing writes it)")
    df = utilities_from_runs(study, cfg.reference, cfg.metric)
    out = Path(cfg.out)
    with atomic_write(out) as fh:
        fh.write(
            f"# UtiliMax utilities: {cfg.metric} gain of the up-weighted short runs over '{cfg.reference}' "
            f"({study})\n# direction\tutility\tstd\tseeds\n"
        )
        for r in df.itertuples():
            std = "nan" if math.isnan(r.std) else f"{r.std:.4f}"
            fh.write(f"{r.direction}\t{r.utility:.4f}\t{std}\t{r.seeds}\n")
    return out


# --- mixing: epochs seen ----------------------------------------------------------------------------
def epochs_table(study_dir: Path, configs: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """Per config, the epochs each direction was really drawn (``mixing_seen``; planned when absent), mean
    over seeds; the last column is the largest."""
    per: dict[str, dict[str, list[float]]] = {}
    for name in configs:
        for run in _seed_runs(study_dir / name).values():
            recs = _log_records(run)
            seen = [r for r in recs if r.get("type") == "mixing_seen"]
            if seen:
                values = seen[-1].get("epochs", {})
            else:
                planned = [r for r in recs if r.get("type") == "mixing"]
                values = {d: v.get("epochs") for d, v in (planned[-1].get("directions", {}) if planned else {}).items()}
            for d, e in values.items():
                if isinstance(e, (int, float)):
                    per.setdefault(name, {}).setdefault(d, []).append(float(e))
    if not per:
        return None
    directions = list(dict.fromkeys(d for v in per.values() for d in v))
    rows = []
    for name in configs:
        if name not in per:
            continue
        means = [mean_std(per[name].get(d, []))[0] for d in directions]
        rows.append(
            [
                name,
                *["–" if math.isnan(m) else f"{m:.2f}" for m in means],
                f"{max(m for m in means if not math.isnan(m)):.2f}",
            ]
        )
    return ["config", *directions, "max"], rows


# --- stability -----------------------------------------------------------------------------------------
def stability_table(study_dir: Path, configs: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """Per config: spike episodes (runs of consecutive spiking updates) and spiking updates, rollbacks, final
    training and validation loss, the monitor's cost (mean ± std over seeds)."""
    rows = []
    for name in configs:
        logs = [
            train_stats.read_log(run / "train_log.jsonl")
            for run in _seed_runs(study_dir / name).values()
            if (run / "train_log.jsonl").is_file()
        ]
        if not logs:
            continue
        episodes = mean_std([float(len(lg.episodes())) for lg in logs])
        spikes = mean_std([float(len(lg.spikes)) for lg in logs])
        rollbacks = mean_std([float(len(lg.rollbacks)) for lg in logs])
        final = mean_std([float(lg.loss["loss"].iloc[-5:].mean()) for lg in logs if len(lg.loss)])
        valid = mean_std([lg.valid_loss for lg in logs if lg.valid_loss is not None])
        ms = mean_std([lg.monitor_ms for lg in logs if lg.monitor_ms is not None])
        rows.append(
            [
                name,
                str(len(logs)),
                fmt_mean_std(*episodes, 1),
                fmt_mean_std(*spikes, 1),
                fmt_mean_std(*rollbacks, 1),
                fmt_mean_std(*final),
                fmt_mean_std(*valid),
                fmt_mean_std(*ms, 1),
            ]
        )
    if not rows:
        return None
    header = [
        "config",
        "seeds",
        "spike episodes",
        "spiking updates",
        "rollbacks",
        "train loss (last 5 logged)",
        "valid loss",
        "monitor ms / log",
    ]
    return header, rows


def before_spike_table(study_dir: Path, configs: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """Per run with a spike: per statistic, the group that moved most in the 3 logged updates before the
    first spike, its earlier median and its value then. Configs that ran the same way up to their first
    spike (a run and its rollback twin: same seed and settings) share their rows."""
    found: dict[tuple, list[str]] = {}
    for name in configs:
        for seed, run in _seed_runs(study_dir / name).items():
            if not (run / "train_log.jsonl").is_file():
                continue
            for r in train_stats.before_spike(train_stats.read_log(run / "train_log.jsonl")):
                key = (
                    seed,
                    r["spike"],
                    train_stats.TITLES[r["stat"]],
                    r["group"],
                    f"{r['earlier']:.3g}",
                    f"{r['before_spike']:.3g}",
                )
                found.setdefault(key, []).append(name)
    if not found:
        return None
    rows = [[", ".join(names), str(seed), str(spike), *rest] for (seed, spike, *rest), names in found.items()]
    return ["config", "seed", "first spike", "statistic", "group", "earlier (median)", "last 3 logs before"], rows
