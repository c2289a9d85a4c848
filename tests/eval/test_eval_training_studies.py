"""mt-eval for the mixing and stability work: the stability figure of mt-eval report, mt-eval utilities, and
the mixing / stability tables of mt-eval ablations, from logs laid out as mt-train and the recipe write them."""

from __future__ import annotations

import json
import math

import matplotlib.image as mpimg
import pandas as pd
import pytest

from eval.cli import eval_main as main
from eval.train_stats import parse_train_log
from mt.data.mixing import load_utilities

GROUPS = ("embed", "enc0.attn", "dec0.ffn")


def _stats(update: int, spike_at: int | None = None) -> dict:
    near = spike_at is not None and spike_at - 6 <= update < spike_at
    return {
        g: {
            "grad_rms": 1e-3 * (i + 1),
            "v_below_eps": 0.6 if (near and g == "embed") else 0.1,
            "update_rms": 0.5,
            "bimodality": 0.9 if near else 0.4,
            "cos": 0.3,
        }
        for i, g in enumerate(GROUPS)
    }


def _train(update: int, loss: float, spike_at: int | None = None) -> dict:
    return {"type": "train", "update": update, "loss": loss, "stability": _stats(update, spike_at), "monitor_ms": 2.5}


def _log_with_rollback(path, spike=21, target=12):
    """Updates 1..30; a spike at ``spike`` rolled back to ``target``; a later two-update spike only warned about."""
    recs = [{"type": "start", "update": 0, "params": 1000}]
    recs += [_train(u, 8.0 - 0.05 * u, spike) for u in range(1, target + 1)]
    abandoned = [_train(u, 8.0 - 0.05 * u if u < spike else 14.0, spike) for u in range(target + 1, spike + 1)]
    recs.append(
        {
            "type": "rollback",
            "update": target,
            "skip": 3,
            "from": "ck/checkpoint_1_12.pt",
            "abandoned": abandoned,
            "spike": {"update": spike, "loss": 14.0, "median": 7.5, "spread": 0.2},
        }
    )
    recs += [_train(u, 7.9 - 0.05 * u) for u in range(target + 1, 31)]
    for u in (28, 29):  # one episode of two spiking updates, only warned about
        recs.append({"type": "spike", "update": u, "spike": {"update": u, "loss": 9.0, "median": 6.6, "spread": 0.1}})
    recs.append({"type": "valid", "update": 30, "loss": 6.5, "directions": {}})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_report_plots_the_stability_statistics_beside_the_loss(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _log_with_rollback(run / "train_log.jsonl")
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "report_figures/training_stability.png" in md
    assert "3 spiking update(s) in 2 episode(s) (updates 21, 28-29)" in md and "1 rollback(s): 21 -> 12 (skip 3)" in md
    assert "2.5 ms per logged update" in md
    img = mpimg.imread(run / "report_figures" / "training_stability.png")
    assert img.shape[0] > 300 and img.shape[1] > 500
    # the loss curve keeps the kept branch only: no spike or rollback record is read as a training loss
    train, _, _ = parse_train_log(run / "train_log.jsonl")
    assert train["update"].tolist() == list(range(1, 31)) and train["loss"].max() < 8.0
    # a log without stability records: no such figure
    (run / "train_log.jsonl").write_text(json.dumps({"type": "train", "update": 1, "loss": 3.0}) + "\n")
    (run / "report_figures" / "training_stability.png").unlink()
    assert main(["report", str(run)]) == 0
    assert "training_stability" not in (run / "report.md").read_text(encoding="utf-8")


def _scores(run, values: dict[str, float]) -> None:
    (run / "gen").mkdir(parents=True)
    rows = [
        [d, "eng-xx" if d.startswith("eng") else "xx-eng", "low" if "xho" in d else "high", v]
        for d, v in values.items()
    ]
    pd.DataFrame(rows, columns=["direction", "group", "tier", "chrf++"]).to_csv(run / "gen" / "scores.csv", index=False)


DIRS = ["eng_Latn-deu_Latn", "deu_Latn-eng_Latn", "eng_Latn-xho_Latn", "xho_Latn-eng_Latn"]


def test_utilities_are_the_gain_of_the_up_weighted_runs_over_the_reference(tmp_path):
    study = tmp_path / "mixing_utility"
    base = {1: [20.0, 22.0, 5.0, 6.0], 2: [21.0, 23.0, 6.0, 7.0]}
    for seed, scores in base.items():
        _scores(study / "uniform" / f"seed{seed}", dict(zip(DIRS, scores)))
    # up_xho_Latn: xho directions gain +2/+4 (seed 1) and +3/+5 (seed 2); deu ones lose (not its utilities)
    _scores(study / "up_xho_Latn" / "seed1", dict(zip(DIRS, [18.0, 20.0, 7.0, 10.0])))
    _scores(study / "up_xho_Latn" / "seed2", dict(zip(DIRS, [19.0, 21.0, 9.0, 12.0])))
    _scores(study / "up_deu_Latn" / "seed1", dict(zip(DIRS, [21.0, 22.5, 1.0, 1.0])))  # one seed only
    out = tmp_path / "utilities.tsv"
    assert main(["utilities", str(study), "--reference", "uniform", "--out", str(out)]) == 0
    df = pd.read_csv(out, sep="\t", comment="#", names=["direction", "utility", "std", "seeds"]).set_index("direction")
    assert df.loc["eng_Latn-xho_Latn", "utility"] == pytest.approx(2.5) and df.loc["eng_Latn-xho_Latn", "seeds"] == 2
    assert df.loc["eng_Latn-xho_Latn", "std"] == pytest.approx(math.sqrt(0.5), abs=1e-4)
    assert df.loc["xho_Latn-eng_Latn", "utility"] == pytest.approx(4.5)
    assert df.loc["eng_Latn-deu_Latn", "utility"] == pytest.approx(1.0) and math.isnan(
        df.loc["eng_Latn-deu_Latn", "std"]
    )
    assert df.loc["deu_Latn-eng_Latn", "utility"] == pytest.approx(0.5)
    # what mt-train --utilities reads back
    assert load_utilities(str(out), DIRS) == pytest.approx([1.0, 0.5, 2.5, 4.5])
    with pytest.raises(SystemExit) as exc:
        main(["utilities", str(study), "--reference", "nope", "--out", str(out)])
    assert exc.value.code == 2


def _mixing_run(run, chrf: float, epochs: dict[str, float]) -> None:
    _scores(run, dict(zip(DIRS, [chrf, chrf + 1, chrf - 10, chrf - 9])))
    recs = [
        {"type": "start", "update": 0, "params": 2_000_000},
        {"type": "mixing", "update": 0, "method": "unimax", "directions": {d: {"epochs": 9.0} for d in DIRS}},
        {"type": "mixing_seen", "update": 400, "epochs": epochs},
    ]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_ablations_add_the_epochs_seen_and_the_stability_tables(tmp_path):
    root = tmp_path / "abl"
    for seed in (1, 2):
        mix = root / "mixing"
        _mixing_run(
            mix / "T1" / f"seed{seed}", 20.0 + seed, {"eng_Latn-deu_Latn": 0.3, "eng_Latn-xho_Latn": 0.1 * seed}
        )
        _mixing_run(mix / "unimax_N5" / f"seed{seed}", 19.0, {"eng_Latn-deu_Latn": 0.2, "eng_Latn-xho_Latn": 5.0})
    stab = root / "stability"
    for cfg in ("unstable", "rollback"):
        for seed in (1, 2):
            run = stab / cfg / f"seed{seed}"
            _scores(run, dict(zip(DIRS, [10.0, 11.0, 3.0, 4.0])))
            _log_with_rollback(run / "train_log.jsonl")
    assert main(["ablations", str(root)]) == 0
    md = (root / "report.md").read_text(encoding="utf-8")
    mixing = md[md.index("## Data mixing") : md.index("## Training stability")]
    assert "epochs each direction was drawn" in mixing
    assert "| T1 | 0.30 | 0.15 | 0.30 |" in mixing and "| unimax_N5 | 0.20 | 5.00 | 5.00 |" in mixing
    stability = md[md.index("## Training stability") :]
    assert "| unstable | 2 | 2.0 ± 0.0 | 3.0 ± 0.0 | 1.0 ± 0.0 |" in stability
    assert "the monitor before the first spike" in stability
    # the embed group's share under eps rose from 0.1 to 0.6 in the records before update 21
    assert "| rollback, unstable | 1 | 21 | share with sqrt(v̂) < eps | embed | 0.1 | 0.6 |" in stability  # same path
    tables = [int(line.split()[1].rstrip(".*")) for line in md.splitlines() if line.startswith("**Table ")]
    assert tables == list(range(1, len(tables) + 1))  # numbered in order, extra tables included
