"""mt-eval ablations: runs laid out as recipes/ablations.sh writes them become tables, mean ± std over seeds."""

import json
import statistics

import pandas as pd

from eval.ablations import group_scores
from eval.cli import eval_main as main
from mt.train import timed


def _scores(run, values):
    """values: {(direction, group, tier): chrf}"""
    (run / "gen").mkdir(parents=True)
    rows = [[d, g, t, v] for (d, g, t), v in values.items()]
    pd.DataFrame(rows, columns=["direction", "group", "tier", "chrf++"]).to_csv(run / "gen" / "scores.csv", index=False)


def _run(root, study, config, seed, high, low, params=1000000):
    run = root / study / config / f"seed{seed}"
    _scores(
        run,
        {
            ("eng_Latn-deu_Latn", "eng-xx", "high"): high,
            ("deu_Latn-eng_Latn", "xx-eng", "high"): high + 2,
            ("eng_Latn-xho_Latn", "eng-xx", "low"): low,
            ("xho_Latn-eng_Latn", "xx-eng", "low"): low + 2,
        },
    )
    (run / "train_log.jsonl").write_text(json.dumps({"type": "start", "update": 0, "params": params}) + "\n")
    return run


def test_group_scores_by_group_and_tier():
    df = pd.DataFrame(
        {
            "direction": ["a", "b", "c"],
            "group": ["eng-xx", "xx-eng", "eng-xx"],
            "tier": ["high", "high", "low"],
            "chrf++": [40.0, 50.0, 10.0],
        }
    )
    g = group_scores(df, "chrf++")
    assert g["all"] == 100 / 3 and g["eng-xx"] == 25.0 and g["xx-eng"] == 50.0
    assert g["high"] == 45.0 and g["low"] == 10.0 and g["mid"] != g["mid"]  # NaN: no mid direction


def test_ablation_tables_mean_std_order_and_commands(tmp_path):
    root = tmp_path / "abl"
    log = root / "timings.tsv"
    # the recipe runs "moe" first (through mt.train.timed, which records the commands), dense before eom
    for config in ("x_dense", "moe_eom"):  # deliberately not alphabetical
        for seed in (1, 2) if config == "x_dense" else (2, 1):  # seeds run in parallel lanes: any order
            timed.main(
                [
                    "--log",
                    str(log),
                    "--step",
                    f"moe/{config}/seed{seed} train",
                    "--",
                    "true",
                    f"--{config}",
                    "--seed",
                    str(seed),
                ]
            )
    _run(root, "moe", "moe_eom", 1, 40.0, 12.0, params=2_500_000)
    _run(root, "moe", "moe_eom", 2, 42.0, 14.0, params=2_500_000)
    _run(root, "moe", "x_dense", 1, 41.0, 10.0)
    _run(root, "moe", "x_dense", 2, 41.0, 11.0)
    _run(root, "temperature", "T1", 1, 45.0, 5.0)
    (root / "temperature" / "T5" / "seed1").mkdir(parents=True)
    (root / "temperature" / "T100" / "seed1").mkdir(parents=True)  # unfinished run: no scores yet, left out
    # mining: ratio margin vs cosine
    (root / "mining" / "ngram").mkdir(parents=True)
    results = [
        {"pair": "deu_Latn-eng_Latn", "margin": "ratio", "test": {"f1": 0.9}},
        {"pair": "deu_Latn-eng_Latn", "margin": "absolute", "test": {"f1": 0.7}},
        {"pair": "xho_Latn-eng_Latn", "margin": "ratio", "oracle": {"f1": 0.5}},
        {"pair": "xho_Latn-eng_Latn", "margin": "absolute", "oracle": {"f1": 0.45}},
    ]
    (root / "mining" / "ngram" / "report.json").write_text(json.dumps({"config": {}, "results": results}))
    # translate-test of two seeds of one model
    for seed, (zs, tt) in ((1, (0.50, 0.60)), (2, (0.50, 0.64))):
        run = root / "moe" / "moe_eom" / f"seed{seed}"
        pd.DataFrame(
            {
                "lang": ["xho_Latn"] * 4,
                "tier": ["low"] * 4,
                "method": ["zero_shot", "translate_test"] * 2,
                "metric": ["accuracy"] * 2 + ["macro_f1"] * 2,
                "score": [zs, tt, 0.1, 0.1],
            }
        ).to_csv(run / "translate_test.csv", index=False)

    # a reused row: temperature/T5 is the moe_eom run (a symlink, as the recipe makes it)
    (root / "temperature" / "T5" / "seed1").rmdir()
    (root / "temperature" / "T5" / "seed1").symlink_to("../../moe/moe_eom/seed1")
    assert main(["ablations", str(root)]) == 0
    md = (root / "report.md").read_text(encoding="utf-8")
    moe = md[md.index("Dense vs sparse MoE") : md.index("Sampling temperature")]
    assert moe.index("| x_dense |") < moe.index("| moe_eom |")  # the recipe's order, not alphabetical
    low = (12 + 14 + 14 + 16) / 4  # moe_eom, low tier: two directions x two seeds
    dense_low = (10 + 12 + 11 + 13) / 4
    sd_eom_low = statistics.stdev([(12 + 14) / 2, (14 + 16) / 2])
    assert "| moe_eom | 1,2 | 2.50M |" in moe
    assert f"{low:.2f} ± {sd_eom_low:.2f}" in moe
    assert f"+{low - dense_low:.2f}" in moe  # Δ low against the first row (x_dense)
    assert "--moe_eom --seed 1" in moe and "--seed 2" not in moe  # seed 1's command is shown
    temp = md[md.index("Sampling temperature") :]
    assert "T100" not in temp
    assert "| T1 | 1 |" in temp and "| T5 | 1 | 2.50M | 27.00 |" in temp
    assert "| ngram | deu_Latn-eng_Latn | 70.00 | 90.00 | +20.00 |" in md
    assert "| ngram | **average (2)** | 57.50 | 70.00 | +12.50 |" in md
    sd = statistics.stdev([10.0, 14.0])
    assert "2 MT model(s)" in md  # the symlinked run is not counted twice
    assert f"| xho_Latn | low | 50.00 ± 0.00 | 62.00 ± {statistics.stdev([60.0, 64.0]):.2f} | +12.00 ± {sd:.2f} |" in md


def test_empty_root_says_so(tmp_path):
    (tmp_path / "abl").mkdir()
    assert main(["ablations", str(tmp_path / "abl")]) == 0
    assert "No finished runs yet" in (tmp_path / "abl" / "report.md").read_text()
