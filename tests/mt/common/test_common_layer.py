"""The common layer every room uses: atomic writes and their leftovers, locks, file identity, OS errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from mt.common.errors import UserError, cli_entry
from mt.common.files import (
    atomic_write,
    exclusive_lock,
    file_identity,
    refuse_overwriting_input,
    remove_stale_temps,
    temp_tag,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    host = temp_tag().rsplit("-", 1)[0]
    dead = tmp_path / f".out.txt.{host}-{_dead_pid()}.k3j4.tmp"
    live = tmp_path / f".out.txt.{temp_tag()}.zz.tmp"  # this process: still writing
    remote = tmp_path / f".out.txt.otherhost-{_dead_pid()}.q1.tmp"  # another machine's writer: not ours to judge
    for p in (dead, live, remote):
        p.write_bytes(b"x" * 1000)
    with atomic_write(tmp_path / "out.txt") as fh:
        fh.write("done\n")
    assert not dead.exists() and live.exists() and remote.exists()
    assert (tmp_path / "out.txt").read_text() == "done\n"
    assert remove_stale_temps(tmp_path, ".out.txt.") == 0


def test_a_killed_atomic_write_leaves_a_temp_that_a_later_run_removes(tmp_path):
    code = (
        "import os, sys; from mt.common.files import atomic_write\n"
        "with atomic_write(sys.argv[1], 'wb') as fh:\n    fh.write(b'x' * 100000); fh.flush(); os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "ck.pt")], check=False)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "the kill should leave a temp file"
    with atomic_write(tmp_path / "ck.pt", "wb") as fh:
        fh.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_file_identity_sees_a_same_size_edit_but_not_a_touch(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text("hello world\n")
    first = file_identity(p)
    os.utime(p, (1, 1))
    assert file_identity(p) == first
    p.write_text("hello World\n")
    assert p.stat().st_size == first["size"] and file_identity(p) != first


def test_output_equal_to_input_is_refused_through_any_spelling(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("x\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match="same file as --input"):
        refuse_overwriting_input({"--input": p}, tmp_path / "sub" / ".." / "a.txt", "--output")
    os.symlink(p, tmp_path / "link.txt")
    with pytest.raises(UserError, match="same file"):
        refuse_overwriting_input({"--input": tmp_path / "link.txt"}, p, "--output")
    refuse_overwriting_input({"--input": p}, tmp_path / "b.txt", "--output")


def test_a_second_holder_of_a_lock_is_refused_with_the_holder_named(tmp_path):
    with exclusive_lock(tmp_path, "--save-dir x"):
        with pytest.raises(UserError, match=rf"--save-dir x is in use by pid {os.getpid()}"):
            with exclusive_lock(tmp_path, "--save-dir x"):
                pass
    with exclusive_lock(tmp_path, "--save-dir x"):  # released: free again
        pass


def test_cli_entry_turns_user_fixable_os_errors_into_one_line(capsys):
    @cli_entry
    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.txt")

    @cli_entry
    def bug(argv):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(SystemExit) as exc:
        full([])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: /data/out.txt: the disk is full")
    with pytest.raises(OSError):  # not something a user can fix: a traceback is right
        bug([])


def test_one_parse_pair_for_training_and_mine_eval():
    from mt.common.langs import ENGLISH, parse_pair

    assert parse_pair("eng_Latn-deu_Latn") == ("eng_Latn", "deu_Latn")
    with pytest.raises(UserError, match="should look like eng_Latn-deu_Latn"):
        parse_pair("deu_Latn")
    with pytest.raises(UserError, match="unknown language code 'de'"):
        parse_pair("de-en")
    # mine-eval: a bare code pairs with English, and real BUCC 2018 names (de-en) pass
    assert parse_pair("deu_Latn", pivot=ENGLISH, codes=False) == ("deu_Latn", "eng_Latn")
    assert parse_pair("de-en", pivot=ENGLISH, codes=False) == ("de", "en")
    for bad in ("de-", "a-b-c", ""):
        with pytest.raises(UserError, match=r"should look like eng_Latn-deu_Latn \(or de-en"):
            parse_pair(bad, pivot=ENGLISH, codes=False)


def test_english_is_spelled_once():
    """The English of English-centric steps is mt.common.langs.ENGLISH, not a module constant per stage."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    spelled = [
        str(p.relative_to(root))
        for package in ("mt", "mining", "eval")
        for p in sorted((root / package).rglob("*.py"))
        if re.search(r"^\s*[A-Z_]+\s*=\s*\"eng_Latn\"", p.read_text(encoding="utf-8"), re.M)
    ]
    assert spelled == ["mt/common/langs.py"]
