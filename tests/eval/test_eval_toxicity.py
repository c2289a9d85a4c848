"""eval/toxicity.py: ETOX-style matching, added toxicity, and missing lists reported as such."""

import pandas as pd
import pytest

from eval.cli import eval_main as main
from eval.toxicity import ToxicityList, ToxicityLists, evaluate_lines
from mt.common.errors import UserError


@pytest.fixture
def lists(tmp_path):
    d = tmp_path / "twl"
    d.mkdir()
    (d / "eng_Latn_twl.txt").write_text("ass\nson of a bitch\nDamn\n", encoding="utf-8")
    (d / "deu_Latn_twl.txt").write_text("Arsch\nblöde Kuh\nScheiße\n", encoding="utf-8")
    (d / "zho_Hans_twl.txt").write_text("混蛋\n他妈的\n", encoding="utf-8")
    return ToxicityLists(d)


def test_space_script_matches_whole_words_only(lists):
    eng = lists.get("eng_Latn")
    assert eng.matches("What an ASS!") == ["ass"]
    assert eng.matches("(ass)") == ["ass"]
    assert eng.matches("A classy assessment of the bass line.") == []  # never inside another word
    assert eng.matches("damn, damn, DAMN") == ["Damn"]  # one count per distinct term


def test_multi_word_terms_need_the_whole_sequence(lists):
    eng = lists.get("eng_Latn")
    assert eng.matches("You son of a bitch.") == ["son of a bitch"]
    assert eng.matches("You son-of-a-bitch!") == ["son of a bitch"]  # punctuation splits tokens
    assert eng.matches("the son of a king") == []
    deu = lists.get("deu_Latn")
    assert deu.matches("Du BLÖDE  Kuh!") == ["blöde Kuh"]
    assert deu.matches("Scheisse") == ["Scheiße"]  # ß and ss read alike (case folding)


def test_non_space_script_matches_substrings(lists):
    zho = lists.get("zho_Hans")
    assert zho.matches("你这个混蛋！") == ["混蛋"]  # inside an unsegmented run of characters
    assert set(zho.matches("他妈的，真是混蛋")) == {"混蛋", "他妈的"}
    assert zho.matches("今天天气很好") == []


def test_mixed_terms_in_one_list():
    tl = ToxicityList("jpn_Jpan", ["バカ", "fuck"])
    assert tl.matches("このバカ野郎") == ["バカ"]
    assert tl.matches("fuck!") == ["fuck"]
    assert tl.matches("fuckwit") == []  # Latin terms stay whole-word even in a Japanese list


def test_added_toxicity_vs_already_in_source(lists):
    src = ["This is fine.", "What an ass.", "What an ass.", "Nice weather."]
    hyp = ["Das ist Scheiße.", "So ein Arsch.", "So ein Arsch, blöde Kuh.", "Schönes Wetter."]
    res = evaluate_lines(src, hyp, "eng_Latn", "deu_Latn", lists)
    assert res.status == "ok"
    assert res.toxic_lines == 3 and res.toxic_rate == pytest.approx(75.0)
    assert res.src_toxic_lines == 2
    # line 1: toxic out of nothing; line 2: same toxicity as the source; line 3: one term more than the source
    assert res.added_lines == 2 and res.added_rate == pytest.approx(50.0)
    by_line = {h.line: h for h in res.hits}
    assert by_line[1].added and by_line[1].tgt_terms == ["Scheiße"] and by_line[1].src_terms == []
    assert by_line[2].added is False and by_line[2].src_terms == ["ass"]
    assert by_line[3].added and sorted(by_line[3].tgt_terms) == ["Arsch", "blöde Kuh"]
    assert 4 not in by_line


def test_missing_lists_are_reported_not_zero(lists):
    src, hyp = ["What an ass."], ["Mtu mbaya."]
    res = evaluate_lines(src, hyp, "eng_Latn", "swh_Latn", lists)
    assert res.status == "no list for swh_Latn"
    assert res.toxic_lines is None and res.added_lines is None and res.toxic_rate is None
    back = evaluate_lines(["Mtu mbaya."], ["What an ass."], "swh_Latn", "eng_Latn", lists)
    assert back.toxic_lines == 1  # the target can still be checked
    assert back.added_lines is None and back.status == "no list for swh_Latn"


def test_toxicity_over_generation_dir(tmp_path, lists, capsys):
    devtest, gen = tmp_path / "devtest", tmp_path / "gen"
    devtest.mkdir()
    gen.mkdir()
    (devtest / "eng_Latn.devtest").write_text("Good morning.\nWhat an ass.\n", encoding="utf-8")
    (gen / "eng_Latn-deu_Latn.hyp").write_text("Guten Morgen, Arsch.\nSo ein Arsch.\n", encoding="utf-8")
    (gen / "eng_Latn-swh_Latn.hyp").write_text("Habari.\nMtu.\n", encoding="utf-8")
    assert main(["toxicity", "--gen-dir", str(gen), "--src-dir", str(devtest), "--toxicity-dir", str(lists.dir)]) == 0
    table = pd.read_csv(gen / "toxicity.csv").set_index("direction")
    assert table.at["eng_Latn-deu_Latn", "added_lines"] == 1 and table.at["eng_Latn-deu_Latn", "toxic_lines"] == 2
    assert (
        pd.isna(table.at["eng_Latn-swh_Latn", "added_lines"])
        and table.at["eng_Latn-swh_Latn", "status"] == "no list for swh_Latn"
    )
    lines = pd.read_csv(gen / "toxicity_lines.tsv", sep="\t")
    first = lines[(lines.direction == "eng_Latn-deu_Latn") & (lines.line == 1)].iloc[0]
    assert first.added == "yes" and first.tgt_terms == "Arsch" and "Guten Morgen" in first.hypothesis
    out = capsys.readouterr().out
    assert "no list" in out and "eng_Latn-deu_Latn" in out


def test_single_direction_cli_lists_offending_lines(tmp_path, lists, capsys):
    (tmp_path / "src").write_text("Hello.\nHi.\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("Hallo.\nHallo, Arsch.\n", encoding="utf-8")
    args = [
        "toxicity",
        "--src",
        str(tmp_path / "src"),
        "--src-lang",
        "eng_Latn",
        "--hyp",
        str(tmp_path / "hyp"),
        "--tgt-lang",
        "deu_Latn",
        "--toxicity-dir",
        str(lists.dir),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "added toxicity: 1 lines (50.00%)" in out
    assert "2: Arsch | -" in out


def test_bad_toxicity_dir(tmp_path):
    with pytest.raises(UserError, match="build-toxicity-lists"):
        ToxicityLists(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="_twl.txt"):
        ToxicityLists(tmp_path / "empty")


def test_katakana_terms_do_not_match_inside_longer_katakana_words():
    tl = ToxicityList("jpn_Jpan", ["カス", "グロ"])
    assert tl.matches("このカス！") == ["カス"]
    assert tl.matches("カスタム設定") == []  # "custom"
    assert tl.matches("グローバル変数") == []  # "global"
    assert tl.matches("ｶｽ野郎") == ["カス"]  # half-width katakana is normalised first
