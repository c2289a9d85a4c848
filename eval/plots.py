"""The report's figures (matplotlib, imported only when a figure is drawn): one function per figure, each
writing one PNG atomically and returning False when there is nothing to draw."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from eval import gendir
from eval.tables import GROUP_TITLES, METRIC_TITLES

TIER_COLORS = {"high": "#2f6b9a", "mid": "#e39b36", "low": "#c0504d", None: "#9a9a9a"}


def pyplot():
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


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    os.replace(tmp, path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def tier_legend(ax, tiers) -> None:
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
    plt = pyplot()
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
        tier_legend(ax, set(tiers))
    axes[-1, 0].set_xlabel("language (sorted by training pairs, largest first)")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def plot_toxicity(tox: pd.DataFrame, path: Path) -> bool:
    """Added toxicity per direction, one panel per direction group (bars labelled by language)."""
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def plot_training(train: pd.DataFrame, valid: pd.DataFrame, path: Path) -> bool:
    if train.empty and valid.empty:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def plot_translate_test(wide: pd.DataFrame, methods: list[str], path: Path) -> bool:
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def plot_against_baseline(rows: pd.DataFrame, metric: str, name: str, path: Path) -> bool:
    """Model and baseline side by side per language, one panel per English-centric group."""
    groups = [g for g in ("eng-xx", "xx-eng") if (rows["group"] == g).any()]
    if not groups:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True
