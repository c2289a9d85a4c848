"""The training-stability records of ``train_log.jsonl`` (``mt.train.stability``) as tables and one figure.

Read: ``train`` records (``update``, ``loss``, ``stability``: group -> statistic -> value), ``spike`` and
``rollback`` records (a rollback holds the train records of the updates it threw away, ``abandoned``).
``plot_stability`` draws the training loss beside the five statistics per parameter group (one thin line
per group, coloured by the kind of group), the abandoned branch of a rollback faded, spikes as red marks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

STATS = ("grad_rms", "v_below_eps", "update_rms", "bimodality", "cos")
TITLES = {
    "grad_rms": "gradient RMS",
    "v_below_eps": "share with sqrt(v̂) < eps",
    "update_rms": "update RMS / lr",
    "bimodality": "bimodality of the update",
    "cos": "cos(update, gradient)",
}
KINDS = {
    "embed": "#c0504d",
    "attn": "#2f6b9a",
    "cross_attn": "#7aa6c9",
    "ffn": "#e39b36",
    "experts": "#8e6bb0",
    "gate": "#3e9a5a",
    "other": "#9a9a9a",
}


@dataclass
class StabilityLog:
    loss: pd.DataFrame  # update, loss (the kept branch)
    stats: pd.DataFrame  # update, group, stat, value (kept branch)
    abandoned_loss: pd.DataFrame  # update, loss, rollback (index of the rollback)
    abandoned_stats: pd.DataFrame  # update, group, stat, value, rollback
    spikes: list[dict] = field(default_factory=list)  # update, loss, median, spread, rolled_back
    rollbacks: list[dict] = field(default_factory=list)  # update (target), spike update, skip
    valid_loss: float | None = None
    monitor_ms: float | None = None

    @property
    def empty(self) -> bool:
        return self.stats.empty

    def episodes(self) -> list[tuple[int, int]]:
        """(first, last) update of each run of consecutive spiking updates, in the order they happened."""
        out: list[list[int]] = []
        for s in self.spikes:
            u = s.get("update")
            if not _num(u):
                continue
            if out and u == out[-1][1] + 1:
                out[-1][1] = u
            else:
                out.append([u, u])
        return [(a, b) for a, b in out]


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def kind(group: str) -> str:
    part = group.split(".")[-1]
    return part if part in KINDS else "embed" if group == "embed" else "other"


def read_log(path: Path) -> StabilityLog:
    loss, stats, abandoned, abandoned_stats, spikes, rollbacks, valid, ms = [], [], [], [], [], [], None, []
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or not _num(rec.get("update")):
                continue
            kind_ = rec.get("type")
            if kind_ == "train":
                if _num(rec.get("loss")):
                    loss.append((rec["update"], rec["loss"]))
                if _num(rec.get("monitor_ms")):
                    ms.append(rec["monitor_ms"])
                stats += _stat_rows(rec)
            elif kind_ == "valid" and _num(rec.get("loss")):
                valid = rec["loss"]
            elif kind_ in ("spike", "rollback") and isinstance(rec.get("spike"), dict):
                s = rec["spike"]
                spikes.append(
                    {
                        "update": s.get("update"),
                        "loss": s.get("loss"),
                        "median": s.get("median"),
                        "spread": s.get("spread"),
                        "rolled_back": kind_ == "rollback",
                    }
                )
                if kind_ == "rollback":
                    rollbacks.append({"update": rec["update"], "spike": s.get("update"), "skip": rec.get("skip")})
                    for a in rec.get("abandoned") or []:
                        if isinstance(a, dict) and a.get("type") == "train" and _num(a.get("update")):
                            if _num(a.get("loss")):
                                abandoned.append((a["update"], a["loss"], len(rollbacks) - 1))
                            abandoned_stats += [(*row, len(rollbacks) - 1) for row in _stat_rows(a)]
    return StabilityLog(
        pd.DataFrame(loss, columns=["update", "loss"]).sort_values("update"),
        pd.DataFrame(stats, columns=["update", "group", "stat", "value"]),
        pd.DataFrame(abandoned, columns=["update", "loss", "rollback"]),
        pd.DataFrame(abandoned_stats, columns=["update", "group", "stat", "value", "rollback"]),
        spikes,
        rollbacks,
        valid,
        (sum(ms) / len(ms)) if ms else None,
    )


def _stat_rows(rec: dict) -> list[tuple]:
    rows = []
    for group, values in (rec.get("stability") if isinstance(rec.get("stability"), dict) else {}).items():
        for stat, v in (values if isinstance(values, dict) else {}).items():
            if _num(v):
                rows.append((rec["update"], group, stat, v))
    return rows


def plot_stability(log: StabilityLog, path: Path, title: str | None = None) -> bool:
    """Loss and the five statistics (2 x 3 panels, shared update axis); False when there is nothing to draw."""
    if log.empty:
        return False
    from eval.report import _plt, _save

    plt = _plt()
    fig, axes = plt.subplots(3, 2, figsize=(8.0, 6.4), sharex=True)
    ax = axes[0][0]
    ax.plot(log.loss["update"], log.loss["loss"], color="#333333", linewidth=0.9, label="train loss")
    for i, part in log.abandoned_loss.groupby("rollback"):
        ax.plot(
            part["update"],
            part["loss"],
            color="#c0504d",
            alpha=0.35,
            linewidth=0.9,
            label="abandoned by a rollback" if i == 0 else None,
        )
    if log.spikes:
        sp = [s for s in log.spikes if _num(s.get("loss"))]
        ax.scatter(
            [s["update"] for s in sp],
            [s["loss"] for s in sp],
            color="#c0504d",
            marker="x",
            s=18,
            zorder=3,
            label="spike detected",
        )
    for rb in log.rollbacks:
        ax.axvline(rb["update"], color="#c0504d", linestyle=":", linewidth=0.8)
    ax.set_ylabel("loss (bits/token)")
    ax.legend(fontsize=6)
    for ax, stat in zip([a for row in axes for a in row][1:], STATS):
        part = log.stats[log.stats["stat"] == stat]
        for group, g in part.groupby("group"):
            ax.plot(g["update"], g["value"], color=KINDS[kind(group)], linewidth=0.7, alpha=0.8)
        if stat == "grad_rms" and (part["value"] > 0).all() and len(part):
            ax.set_yscale("log")
        for s in log.spikes:
            ax.axvline(s["update"], color="#c0504d", alpha=0.25, linewidth=0.6)
        ax.set_title(TITLES[stat], loc="left")
    from matplotlib.lines import Line2D

    present = sorted({kind(g) for g in log.stats["group"]}, key=list(KINDS).index)
    axes[0][1].legend(handles=[Line2D([], [], color=KINDS[k], label=k) for k in present], fontsize=6, ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("update")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return True


def before_spike(log: StabilityLog, lookback: int = 3) -> list[dict]:
    """For the first spike: per statistic, the group that moved most in the last ``lookback`` logged records
    before it, against its median over the earlier records (what the monitor showed coming)."""
    spikes = [s for s in log.spikes if _num(s.get("update"))]
    if not spikes or log.empty:
        return []
    first = min(spikes, key=lambda s: s["update"])
    before = log.stats[log.stats["update"] < first["update"]]
    if first["rolled_back"]:  # the branch that spiked: kept records up to the rollback, then the abandoned ones
        i = next(k for k, r in enumerate(log.rollbacks) if r["spike"] == first["update"])
        ab = log.abandoned_stats[log.abandoned_stats["rollback"] == i].drop(columns="rollback")
        before = pd.concat([log.stats[log.stats["update"] <= log.rollbacks[i]["update"]], ab])
        before = before[before["update"] < first["update"]]
    ups = sorted(before["update"].unique())
    if len(ups) <= lookback:
        return []
    recent, earlier = set(ups[-lookback:]), set(ups[:-lookback])
    rows = []
    for stat in STATS:
        part = before[before["stat"] == stat]
        best = None
        for group, g in part.groupby("group"):
            a = g[g["update"].isin(earlier)]["value"].median()
            b = g[g["update"].isin(recent)]["value"].mean()
            if not (_num(a) and _num(b)):
                continue
            change = abs(b - a) / max(abs(a), 1e-12)
            if best is None or change > best[0]:
                best = (change, group, a, b)
        if best and best[0] > 1e-6:
            rows.append(
                {"stat": stat, "group": best[1], "earlier": best[2], "before_spike": best[3], "spike": first["update"]}
            )
    return rows
