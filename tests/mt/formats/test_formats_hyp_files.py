"""``.hyp`` names: written (mt-generate) and parsed (mt-eval) by one pair of functions."""

from __future__ import annotations

from eval.gendir import Direction, find_directions
from mt.formats.hyp_files import hyp_name, parse_hyp_name


def test_name_round_trip():
    assert hyp_name("eng_Latn", "deu_Latn") == "eng_Latn-deu_Latn.hyp"
    assert parse_hyp_name(hyp_name("zho_Hant", "eng_Latn")) == ("zho_Hant", "eng_Latn")


def test_other_names_are_not_hypotheses():
    for name in ("eng_Latn-deu_Latn.txt", "generate-test.txt", "eng-deu.hyp", "eng_Latn_deu_Latn.hyp", "x.hyp"):
        assert parse_hyp_name(name) is None


def test_generation_directory_reader_finds_what_the_writer_names(tmp_path):
    for src, tgt in (("eng_Latn", "deu_Latn"), ("fra_Latn", "eng_Latn")):
        (tmp_path / hyp_name(src, tgt)).write_text("x\n", encoding="utf-8")
    (tmp_path / "generate-devtest.txt").write_text("S-0\tx\n", encoding="utf-8")
    found = find_directions(tmp_path)
    assert [d for d, _ in found] == [Direction("eng_Latn", "deu_Latn"), Direction("fra_Latn", "eng_Latn")]
