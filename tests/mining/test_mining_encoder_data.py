"""mine-train-encoder's data readers: every line of a file counts, a last line without a newline included."""

from __future__ import annotations

import pytest

from mining.encoder_data import read_bitext
from mining.xsim import _read as read_eval_file
from mt.common.errors import UserError
from mt.common.textio import read_lines as stream_lines


def read_lines(path):
    return list(stream_lines(path, progress=False))


def test_the_last_line_without_a_final_newline_is_kept(tmp_path):
    eng, xho = tmp_path / "eng_Latn-xho_Latn.eng_Latn", tmp_path / "eng_Latn-xho_Latn.xho_Latn"
    eng.write_text("one\ntwo\nthree")  # as many editors and `printf` leave a file
    xho.write_text("nye\nmbini\nntathu")
    assert read_lines(eng) == ["one", "two", "three"]
    assert read_bitext(eng, xho) == [("one", "nye"), ("two", "mbini"), ("three", "ntathu")]
    assert read_eval_file(eng) == ["one", "two", "three"]  # mine-eval xsim's reader had the same cut
    eng.write_text("one\ntwo\nthree\n")
    assert read_lines(eng) == ["one", "two", "three"]
    eng.write_text("")
    assert read_lines(eng) == []
    eng.write_text("\n")
    assert read_lines(eng) == [""]


def test_one_side_with_and_one_without_final_newline_still_align(tmp_path):
    eng, xho = tmp_path / "a.eng_Latn", tmp_path / "a.xho_Latn"
    eng.write_text("one\ntwo\n")
    xho.write_text("nye\nmbini")
    assert read_bitext(eng, xho) == [("one", "nye"), ("two", "mbini")]


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    eng = tmp_path / "a.eng_Latn"
    eng.write_bytes(b"one\ncaf\xe9\n")
    with pytest.raises(UserError, match=r"a.eng_Latn:2: not valid UTF-8"):
        read_lines(eng)
