"""Checks that run before a command writes anything: a file in the way of an output (mt.common.files), and a
line count that refuses a file that is not UTF-8, naming the line, instead of failing halfway through the work
(mt.common.textio)."""

from __future__ import annotations

import gzip

import pytest

from mt.common.errors import UserError
from mt.common.files import read_marked_json, refuse_file_in_the_way
from mt.common.textio import count_lines, read_lines


def test_a_file_where_a_folder_of_the_output_belongs_is_refused(tmp_path):
    (tmp_path / "report.txt").write_text("mine\n")
    with pytest.raises(UserError, match=r"--out .*report.txt is a file, not a folder"):
        refuse_file_in_the_way(tmp_path / "report.txt" / "sub" / "out.tsv", "--out")
    with pytest.raises(UserError, match="is a folder: give the path of a file"):
        refuse_file_in_the_way(tmp_path, "--output")
    with pytest.raises(UserError, match="is a file, not a folder"):
        refuse_file_in_the_way(tmp_path / "report.txt", "--destdir", folder=True)
    refuse_file_in_the_way(tmp_path / "new" / "deeper" / "out.tsv", "--out")  # folders to create: fine
    refuse_file_in_the_way(tmp_path / "report.txt", "--out")  # an existing file is replaced: fine
    refuse_file_in_the_way(tmp_path, "--destdir", folder=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]  # a check creates nothing


def test_read_marked_json_checks_the_format_marker(tmp_path):
    good, other, broken = tmp_path / "good.json", tmp_path / "other.json", tmp_path / "broken.json"
    good.write_text('{"format": "x/1", "n": 2}', encoding="utf-8")
    other.write_text('{"format": "y/1"}', encoding="utf-8")
    broken.write_bytes(b"\xff{")
    assert read_marked_json(good, "x/1", "an x file", "write it with mt-x") == {"format": "x/1", "n": 2}
    with pytest.raises(UserError, match=r"other.json: not an x file \(no 'x/1' format marker\); write it with mt-x"):
        read_marked_json(other, "x/1", "an x file", "write it with mt-x")
    for path in (broken, tmp_path / "missing.json"):
        with pytest.raises(UserError, match=r"cannot read an x file \(.*\); write it with mt-x"):
            read_marked_json(path, "x/1", "an x file", "write it with mt-x")


@pytest.mark.parametrize("data,n", [(b"", 0), (b"a\n", 1), (b"a\nb", 2), (b"a\n\n", 2), ("\u00e9\n".encode(), 1)])
def test_count_lines_counts_a_last_line_without_newline(tmp_path, data, n):
    (tmp_path / "t.txt").write_bytes(data)
    assert count_lines(tmp_path / "t.txt") == n
    with gzip.open(tmp_path / "t.txt.gz", "wb") as fh:
        fh.write(data)
    assert count_lines(tmp_path / "t.txt.gz") == n


def test_count_lines_names_the_first_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    # the bad byte sits right after a 1 MiB block boundary in the middle of a two-byte character
    path.write_bytes(b"x" * ((1 << 20) - 1) + "\u00e9\n".encode() + b"ok\nbad \xe9t\xe9\nok\n")
    with pytest.raises(UserError, match=r"latin1.txt:3: not valid UTF-8"):
        count_lines(path)
    assert count_lines(path, check_utf8=False) == 4
    path.write_bytes(b"ok\ncut \xc3")  # a character cut off at the end of the file
    with pytest.raises(UserError, match=r"latin1.txt:2: not valid UTF-8"):
        count_lines(path)


@pytest.mark.parametrize("data", [b"", b"a\n", b"a\nb", b"a\n\n", b"a\r\nb \t\r\n", "\ufeffx \n\u00e9".encode()])
def test_read_lines_yields_as_many_lines_as_count_lines_counts(tmp_path, data):
    path = tmp_path / "t.txt"
    path.write_bytes(data)
    assert len(list(read_lines(path, progress=False))) == count_lines(path)


def test_read_lines_options_for_hypotheses_and_references(tmp_path):
    path = tmp_path / "hyp.txt"
    path.write_bytes("\ufeffone \r\ntwo\u00a0\r\n\ufeffthree".encode())
    assert list(read_lines(path, progress=False)) == ["\ufeffone ", "two\u00a0", "\ufeffthree"]
    # mt-eval (sacrebleu's reading): no byte-order mark on line 1, trailing whitespace gone
    assert list(read_lines(path, progress=False, bom=True, strip=None)) == ["one", "two", "\ufeffthree"]
    with gzip.open(tmp_path / "hyp.txt.gz", "wb") as fh:
        fh.write(path.read_bytes())
    assert list(read_lines(tmp_path / "hyp.txt.gz", progress=False, bom=True)) == ["one ", "two\u00a0", "\ufeffthree"]
    with pytest.raises(UserError, match="missing.txt: input file not found"):
        list(read_lines(tmp_path / "missing.txt", progress=False))
