"""mt-eval report's run sections: a baseline system, the mining results and the per-step time table;
and python -m mt.train.timed, which writes that table."""

import json
import sys

import pandas as pd
import pytest

from eval.cli import eval_main as main
from eval.report import ReportConfig, write_report
from mt.common.errors import UserError
from mt.train import timed


def _scores(path, values):
    rows = []
    for (src, tgt), v in values.items():
        group = "eng-xx" if src == "eng_Latn" else "xx-eng"
        lang = tgt if src == "eng_Latn" else src
        rows.append([f"{src}-{tgt}", src, tgt, group, lang, 300, v])
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["direction", "src", "tgt", "group", "lang", "n_lines", "chrf++"]).to_csv(
        path / "scores.csv", index=False
    )


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    model = {
        ("eng_Latn", "deu_Latn"): 40.0,
        ("deu_Latn", "eng_Latn"): 45.0,
        ("eng_Latn", "xho_Latn"): 9.0,
        ("xho_Latn", "eng_Latn"): 20.0,
    }
    copy = {
        ("eng_Latn", "deu_Latn"): 14.0,
        ("deu_Latn", "eng_Latn"): 15.7,
        ("eng_Latn", "xho_Latn"): 11.4,
        ("xho_Latn", "eng_Latn"): 13.6,
    }
    _scores(run, model)
    _scores(run / "copy_source", copy)
    (tmp_path / "stats.tsv").write_text(
        "lang\ttrain_pairs\tdev\tdevtest\tmono\ttier\ndeu_Latn\t31526\t200\t300\t300\thigh\n"
        "xho_Latn\t451\t200\t300\t112\tlow\n"
    )
    return run


def test_baseline_section_counts_wins_and_names_losers(run, tmp_path):
    assert (
        main(
            [
                "report",
                str(run),
                "--stats",
                str(tmp_path / "stats.tsv"),
                "--baseline",
                str(run / "copy_source"),
                "--baseline-name",
                "copy-the-source",
            ]
        )
        == 0
    )
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "## 2. Against the baseline (copy-the-source)" in md
    assert "beats copy-the-source in **3 of 4 directions**" in md
    assert "eng_Latn→xx: 1/2" in md and "xx→eng_Latn: 2/2" in md
    assert "Not better than copy-the-source: eng_Latn-xho_Latn (-2.40)" in md
    assert "| eng_Latn-deu_Latn | high | 31526 | 40.00 | 14.00 | +26.00 |" in md
    assert (run / "report_figures" / "against_baseline.png").stat().st_size > 1000


def test_baseline_without_scores_is_a_clear_error(run, tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(UserError, match="mt-eval dir"):
        write_report(ReportConfig(str(run), baseline=str(empty)))
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run), "--baseline", str(empty)])
    assert exc.value.code == 2
    assert "no scores.csv for the baseline" in capsys.readouterr().err


def test_mining_section_from_gold_json(run, tmp_path):
    mined = tmp_path / "mined"
    for lang, (n, correct, gold) in {"deu_Latn": (280, 266, 300), "xho_Latn": (90, 72, 112)}.items():
        (mined / lang).mkdir(parents=True)
        res = {
            "mined": n,
            "gold": gold,
            "gold_reachable": gold - 5,
            "all": {
                "precision": correct / n,
                "recall": correct / gold,
                "f1": 2 * correct / (n + gold),
                "correct": correct,
            },
        }
        (mined / lang / "gold.json").write_text(json.dumps(res))
    (mined / "khk_Cyrl").mkdir()  # no gold: counted from mined.tsv
    (mined / "khk_Cyrl" / "mined.tsv").write_text("1.2\ta\tb\n1.1\tc\td\n")
    (mined / "empty").mkdir()  # ignored
    assert main(["report", str(run), "--stats", str(tmp_path / "stats.tsv"), "--mining", str(mined)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "Bitext mining" in md
    assert "372 pairs were mined from the monolingual side of 3 languages" in md
    assert f"precision {100 * 338 / 372:.1f}%" in md and f"recall {100 * 338 / 412:.1f}% of 412" in md
    assert "| xho_Latn | low | 451 | 90 | +20.0% | 72 | 112 | 80.00 | 64.29 |" in md
    assert "| khk_Cyrl | – | – | 2 | – | – | – | – | – | – |" in md


def test_timed_logs_steps_and_report_sums_them(run, tmp_path, capsys):
    log = tmp_path / "timings.tsv"
    burn = "s = 0\nfor i in range(3000000): s += i"
    assert timed.main(["--log", str(log), "--step", "spm", "--", sys.executable, "-c", burn]) == 0
    assert (
        timed.main(["--log", str(log), "--step", "train", "--", sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    )
    assert timed.main(["--log", str(log), "--step", "train", "--", sys.executable, "-c", burn]) == 0
    assert "[train] FAILED (exit 3)" in capsys.readouterr().err
    assert timed.main(["--log", str(log), "--step", "x", "--", "no-such-command-e2e"]) == 127
    df = pd.read_csv(log, sep="\t")
    assert list(df["step"]) == ["spm", "train", "train"]
    assert list(df["rc"]) == [0, 3, 0]
    assert (df["cpu_s"] >= 0).all() and df.loc[0, "cpu_s"] > 0 and (df["wall_s"] > 0).all()
    assert df.loc[0, "max_rss_mb"] > 1
    assert main(["report", str(run), "--timings", str(log)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "Run time" in md
    total_train = df[df["step"] == "train"]["wall_s"].sum()
    assert f"| train | {total_train:.1f} |" in md and "2 (1 stopped/failed)" in md
    assert "| **total** |" in md


def test_sections_absent_without_flags(run):
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "baseline" not in md and "Bitext mining" not in md and "Run time" not in md
