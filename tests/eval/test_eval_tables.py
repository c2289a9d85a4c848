"""eval/gendir.py and eval/tables.py: generation-directory scoring and NLLB-style grouped averages."""

import json

import pandas as pd
import pytest

from eval import gendir
from eval.cli import eval_main as main
from eval.metrics import MetricSpec, corpus_score
from eval.tables import grouped_averages, markdown_table
from mt.common.errors import UserError


def _table(rows):
    return pd.DataFrame(
        rows, columns=["direction", "src", "tgt", "group", "lang", "tier", "train_pairs", "n_lines", "chrf++"]
    )


def test_grouped_averages_by_group_and_tier():
    df = _table(
        [
            ["eng_Latn-deu_Latn", "eng_Latn", "deu_Latn", "eng-xx", "deu_Latn", "high", 900, 10, 60.0],
            ["eng_Latn-fra_Latn", "eng_Latn", "fra_Latn", "eng-xx", "fra_Latn", "high", 800, 10, 50.0],
            ["eng_Latn-swh_Latn", "eng_Latn", "swh_Latn", "eng-xx", "swh_Latn", "low", 10, 10, 20.0],
            ["deu_Latn-eng_Latn", "deu_Latn", "eng_Latn", "xx-eng", "deu_Latn", "high", 900, 10, 70.0],
            ["swh_Latn-eng_Latn", "swh_Latn", "eng_Latn", "xx-eng", "swh_Latn", "low", 10, 10, 30.0],
            ["deu_Latn-swh_Latn", "deu_Latn", "swh_Latn", "xx-yy", "swh_Latn", "low", 10, 10, 10.0],
        ]
    )
    avg = grouped_averages(df).set_index(["group", "tier"])
    assert avg.at[("eng-xx", "all"), "chrf++"] == pytest.approx((60 + 50 + 20) / 3, abs=0.005)
    assert avg.at[("eng-xx", "high"), "chrf++"] == 55.0 and avg.at[("eng-xx", "high"), "n"] == 2
    assert avg.at[("eng-xx", "low"), "chrf++"] == 20.0
    assert avg.at[("xx-eng", "all"), "chrf++"] == 50.0
    assert avg.at[("xx-yy", "low"), "chrf++"] == 10.0 and avg.at[("xx-yy", "high"), "n"] == 0
    assert avg.at[("all", "all"), "chrf++"] == pytest.approx(240 / 6, abs=0.005)
    assert avg.at[("all", "low"), "chrf++"] == 20.0 and avg.at[("all", "low"), "n"] == 3
    assert "mid" not in avg.index.get_level_values("tier")  # no mid-tier direction, no mid column


def test_direction_groups_and_tiers():
    stats = pd.DataFrame(
        {"train_pairs": [900, 40, 10], "tier": ["high", "mid", "low"]}, index=["deu_Latn", "ita_Latn", "swh_Latn"]
    )
    assert gendir.Direction("eng_Latn", "deu_Latn").group == "eng-xx"
    assert gendir.Direction("swh_Latn", "eng_Latn").group == "xx-eng"
    assert gendir.Direction("swh_Latn", "eng_Latn").lang == "swh_Latn"
    d = gendir.Direction("deu_Latn", "ita_Latn")
    assert d.group == "xx-yy"
    assert gendir.direction_tier(d, stats) == "mid"  # the lower-resourced side
    assert gendir.direction_train_pairs(d, stats) == 40
    assert gendir.direction_tier(gendir.Direction("eng_Latn", "fra_Latn"), stats) is None  # not in stats


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_dir_command_scores_every_direction(tmp_path, capsys):
    corpus, gen = tmp_path / "corpus", tmp_path / "run" / "gen"
    refs = {
        "eng_Latn": ["the cat sits on the mat", "a dog runs in the park", "green trees grow tall"],
        "deu_Latn": ["die Katze sitzt auf der Matte", "ein Hund rennt im Park", "grüne Bäume wachsen hoch"],
        "swh_Latn": ["paka ameketi kwenye mkeka", "mbwa anakimbia bustanini", "miti ya kijani inakua mirefu"],
    }
    for lang, lines in refs.items():
        _write(corpus / "devtest" / f"{lang}.devtest", lines)
    (corpus / "stats.tsv").write_text(
        "lang\ttrain_pairs\tdev\tdevtest\tmono\ttier\ndeu_Latn\t5000\t3\t3\t0\thigh\nswh_Latn\t20\t3\t3\t0\tlow\n"
    )
    hyps = {
        "eng_Latn-deu_Latn": ["die Katze sitzt auf Matte", "ein Hund rennt im Park", "grüne Bäume"],
        "eng_Latn-swh_Latn": ["paka", "mbwa", "miti"],
        "deu_Latn-eng_Latn": ["the cat sits on the mat", "a dog runs in the park", "green trees grow tall"],
    }
    for name, lines in hyps.items():
        _write(gen / f"{name}.hyp", lines)
    _write(gen / "notes.txt", ["ignored"])
    assert main(["dir", str(gen), "--ref-dir", str(corpus / "devtest"), "--metrics", "chrf++", "bleu"]) == 0
    df = pd.read_csv(gen / "scores.csv").set_index("direction")
    assert sorted(df.index) == sorted(hyps)
    assert df.at["deu_Latn-eng_Latn", "chrf++"] == 100.0
    expected = corpus_score(hyps["eng_Latn-deu_Latn"], refs["deu_Latn"], MetricSpec("chrf++")).score
    assert df.at["eng_Latn-deu_Latn", "chrf++"] == pytest.approx(expected, abs=0.005)
    assert df.at["eng_Latn-swh_Latn", "tier"] == "low" and df.at["eng_Latn-swh_Latn", "train_pairs"] == 20
    assert df.at["deu_Latn-eng_Latn", "group"] == "xx-eng"
    avg = pd.read_csv(gen / "scores_averages.csv").set_index(["group", "tier"])
    assert avg.at[("eng-xx", "all"), "chrf++"] == pytest.approx(
        df.loc[["eng_Latn-deu_Latn", "eng_Latn-swh_Latn"], "chrf++"].mean(), abs=0.01
    )
    md = (gen / "scores.md").read_text()
    assert "| eng_Latn-swh_Latn |" in md and "bleu averages" in md
    sigs = json.loads((gen / "scores.json").read_text())["signatures"]
    assert "nw:2" in sigs["chrf++"] and "tok:13a" in sigs["bleu"] and sigs["bleu"] in md
    assert "eng_Latn→xx" in capsys.readouterr().out


def test_dir_errors_are_clear(tmp_path):
    (tmp_path / "gen").mkdir()
    with pytest.raises(UserError, match="eng_Latn-deu_Latn.hyp"):
        gendir.find_directions(tmp_path / "gen")
    _write(tmp_path / "gen" / "eng_Latn-deu_Latn.hyp", ["x"])
    (tmp_path / "devtest").mkdir()
    with pytest.raises(UserError, match="no reference for deu_Latn"):
        gendir.ref_path(tmp_path / "devtest", "deu_Latn")
    (tmp_path / "stats.tsv").write_text("lang\ttrain_pairs\ttier\ndeu_Latn\t5\tgiant\n")
    with pytest.raises(UserError, match=r"stats.tsv:2: tier 'giant'"):
        gendir.load_stats(tmp_path / "stats.tsv")


def test_markdown_table_aligns_numbers_right():
    md = markdown_table(["lang", "score", "note"], [["deu_Latn", 61.234, "ok"], ["swh_Latn", float("nan"), "a|b"]])
    lines = md.splitlines()
    assert lines[1] == "|:---|---:|:---|"
    assert "61.23" in lines[2] and "–" in lines[3] and "a\\|b" in lines[3]


def test_parallel_scoring_gives_the_same_table(tmp_path):
    from eval.tables import score_directory

    refs = ["ein Hund rennt im Park", "die Katze schläft", "grüne Bäume wachsen"]
    _write(tmp_path / "devtest" / "deu_Latn.devtest", refs)
    _write(tmp_path / "devtest" / "eng_Latn.devtest", ["a dog runs in the park", "the cat sleeps", "green trees grow"])
    _write(tmp_path / "gen" / "eng_Latn-deu_Latn.hyp", ["ein Hund im Park", "die Katze schläft", "Bäume"])
    _write(tmp_path / "gen" / "deu_Latn-eng_Latn.hyp", ["a dog in the park", "the cat", "green trees grow"])
    specs = [MetricSpec("chrf++")]
    serial = score_directory(tmp_path / "gen", tmp_path / "devtest", specs, progress=False, workers=1)
    parallel = score_directory(tmp_path / "gen", tmp_path / "devtest", specs, progress=False, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial["chrf++"].between(1, 99).all()
