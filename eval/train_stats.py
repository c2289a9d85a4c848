"""``train_log.jsonl`` for mt-eval: the loss curves (``parse_train_log``) and the training-stability records
(``mt.train.stability``) as tables and one figure. The names of the format are ``mt.formats.trainlog``'s.

Read: ``train`` records (``update``, ``loss``, ``stability``: group -> statistic -> value), ``spike`` and
``rollback`` records (a rollback holds the train records of the updates it threw away, ``abandoned``).
``plot_stability`` draws the training loss beside the five statistics per parameter group (one thin line
per group, coloured by the kind of group), the abandoned branch of a rollback faded, spikes as red marks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eval.plots import pyplot, save_figure
from mt.formats import trainlog as tl

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
    for rec in tl.read_records(path)[0]:
        if not _num(rec.get(tl.KEY_UPDATE)):
            continue
        kind_ = rec.get(tl.KEY_TYPE)
        if kind_ == tl.TYPE_TRAIN:
            if _num(rec.get(tl.KEY_LOSS)):
                loss.append((rec[tl.KEY_UPDATE], rec[tl.KEY_LOSS]))
            if _num(rec.get(tl.KEY_MONITOR_MS)):
                ms.append(rec[tl.KEY_MONITOR_MS])
            stats += _stat_rows(rec)
        elif kind_ == tl.TYPE_VALID and _num(rec.get(tl.KEY_LOSS)):
            valid = rec[tl.KEY_LOSS]
        elif kind_ in (tl.TYPE_SPIKE, tl.TYPE_ROLLBACK) and isinstance(rec.get(tl.KEY_SPIKE), dict):
            s = rec[tl.KEY_SPIKE]
            spikes.append(
                {
                    "update": s.get(tl.KEY_UPDATE),
                    "loss": s.get(tl.KEY_LOSS),
                    "median": s.get(tl.KEY_MEDIAN),
                    "spread": s.get(tl.KEY_SPREAD),
                    "rolled_back": kind_ == tl.TYPE_ROLLBACK,
                }
            )
            if kind_ == tl.TYPE_ROLLBACK:
                rollbacks.append(
                    {"update": rec[tl.KEY_UPDATE], "spike": s.get(tl.KEY_UPDATE), "skip": rec.get(tl.KEY_SKIP)}
                )
                for a in rec.get(tl.KEY_ABANDONED) or []:
                    if isinstance(a, dict) and a.get(tl.KEY_TYPE) == tl.TYPE_TRAIN and _num(a.get(tl.KEY_UPDATE)):
                        if _num(a.get(tl.KEY_LOSS)):
                            abandoned.append((a[tl.KEY_UPDATE], a[tl.KEY_LOSS], len(rollbacks) - 1))
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
    stability = rec.get(tl.KEY_STABILITY)
    for group, values in (stability if isinstance(stability, dict) else {}).items():
        for stat, v in (values if isinstance(values, dict) else {}).items():
            if _num(v):
                rows.append((rec[tl.KEY_UPDATE], group, stat, v))
    return rows


def plot_stability(log: StabilityLog, path: Path, title: str | None = None) -> bool:
    """Loss and the five statistics (2 x 3 panels, shared update axis); False when there is nothing to draw."""
    if log.empty:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
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


def parse_train_log(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(train: update, loss), (valid: update, direction, loss) and the number of skipped lines: lines that are
    not JSON objects or records without an update number."""
    records, skipped = tl.read_records(path)
    train, valid = [], []
    for rec in records:
        step = next((rec[k] for k in (tl.KEY_UPDATE, *_OTHER_STEP_KEYS) if _num(rec.get(k))), None)
        if step is None:
            skipped += 1
            continue
        found_valid = _valid_entries(rec)
        for direction, loss in found_valid:
            valid.append({"update": step, "direction": direction, "loss": loss})
        if not found_valid and str(rec.get("split", rec.get("subset", "train"))) == "train":
            loss = next((rec[k] for k in (tl.KEY_LOSS, "train_loss") if _num(rec.get(k))), None)
            if loss is not None:
                train.append({"update": step, "loss": loss})
    return (
        pd.DataFrame(train, columns=["update", "loss"]).sort_values("update"),
        pd.DataFrame(valid, columns=["update", "direction", "loss"]).sort_values("update"),
        skipped,
    )


def _valid_entries(rec: dict) -> list[tuple[str, float]]:
    """(direction, loss) of a validation record: mt-train's (``mt.formats.trainlog``), else another tool's."""
    if rec.get(tl.KEY_TYPE) != tl.TYPE_VALID:
        return _other_valid_entries(rec)
    out: list[tuple[str, float]] = []
    if _num(rec.get(tl.KEY_LOSS)):
        out.append(("all", rec[tl.KEY_LOSS]))
    per_direction = rec.get(tl.KEY_DIRECTIONS)
    for k, v in (per_direction if isinstance(per_direction, dict) else {}).items():
        if isinstance(v, dict) and _num(v.get(tl.KEY_LOSS)):
            out.append((str(k), v[tl.KEY_LOSS]))
    return out


# Logs of other tools (fairseq-style JSON logs): the step under another name, and validation losses as
# ``valid_loss`` (a number or {direction: loss}), ``valid_loss/<direction>``, ``valid/<direction>/loss``,
# ``valid: {direction: loss | {loss}}``, or a record with ``split``/``subset`` = valid and ``direction``/``pair``.
_OTHER_STEP_KEYS = ("num_updates", "step")


def _other_valid_entries(rec: dict) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    split = str(rec.get("split", rec.get("subset", "")))
    if split in ("valid", "dev", "validation"):
        loss = next((rec[k] for k in ("valid_loss", "loss") if _num(rec.get(k))), None)
        if loss is not None:
            out.append((str(rec.get("direction", rec.get("pair", "all"))), loss))
        return out
    vl = rec.get("valid_loss")
    if _num(vl):
        out.append(("all", vl))
    elif isinstance(vl, dict):
        out += [(str(k), v) for k, v in vl.items() if _num(v)]
    valid = rec.get("valid")
    if isinstance(valid, dict):
        for k, v in valid.items():
            if _num(v):
                out.append((str(k), v))
            elif isinstance(v, dict) and _num(v.get("loss")):
                out.append((str(k), v["loss"]))
    for key, v in rec.items():
        if key.startswith("valid_loss/") and _num(v):
            out.append((key.split("/", 1)[1], v))
        elif key.startswith("valid/") and key.endswith("/loss") and _num(v):
            out.append((key[len("valid/") : -len("/loss")], v))
    return out
