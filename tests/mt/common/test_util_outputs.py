"""mt.common.files's checks run before a command writes anything: a file in the way of an output, and a line count
that refuses a file that is not UTF-8 (naming the line) instead of failing halfway through the work."""

from __future__ import annotations

import gzip

import pytest

from mt.common.errors import UserError
from mt.common.files import count_lines, refuse_file_in_the_way


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
