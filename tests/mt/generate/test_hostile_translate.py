"""Hostile and careless inputs for mt-translate: each is refused up front with one line, exit != 0, nothing written."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch
from decode_fixtures import make_checkpoint
from hostile import assert_refused, run_cli
from train_fixtures import one_thread  # noqa: F401 (autouse)

from mt.formats import checkpoint as ckpt


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("hostile_tr"))[0]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLLB_MINI_HOME", str(tmp_path / "home" / "nllb"))


def _args(ck: Path, out: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> list:
    return [
        *inputs,
        "--path",
        ck,
        "-s",
        "eng_Latn",
        "-t",
        "deu_Latn",
        "--out",
        out,
        "--chunk-size",
        "2",
        "--beam",
        "1",
        "--max-len-b",
        "5",
        "--no-progress-bar",
        *extra,
    ]


def test_inputs_with_one_output_name(ck, tmp_path):
    (tmp_path / "corpus.txt").write_text("a big house\n", encoding="utf-8")
    with gzip.open(tmp_path / "corpus.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("the cat\n")
    out = tmp_path / "out"
    assert_refused(
        "mt-translate",
        _args(ck, out, tmp_path / "corpus.txt", tmp_path / "corpus.txt.gz"),
        tmp_path,
        outputs=[out],
        expect="would both be written to OUT/{tgt}/corpus.txt",
    )
    (tmp_path / "a.tsv").write_text("1\tthe cat\n", encoding="utf-8")  # output a.tsv.txt
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.tsv.txt").write_text("the dog\n", encoding="utf-8")  # output a.tsv.txt too
    assert_refused(
        "mt-translate",
        _args(ck, out, tmp_path / "a.tsv", tmp_path / "d", extra=("--column", "2")),
        tmp_path,
        outputs=[out],
        expect="a.tsv.txt",
    )


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_out_is_or_lies_under_a_file(ck, tmp_path, where):
    (tmp_path / "in.txt").write_text("a big house\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    out = tmp_path / "notes.txt" if where == "file" else tmp_path / "notes.txt" / "out"
    assert_refused("mt-translate", _args(ck, out, tmp_path / "in.txt"), tmp_path, expect="not a folder")


@pytest.mark.parametrize("shard", ["2/2", "a/b", "1/0", "-1/2", "1/2/3", "0", ""])
def test_bad_shard(ck, tmp_path, shard):
    (tmp_path / "in.txt").write_text("a big house\n", encoding="utf-8")
    out = tmp_path / "out"
    assert_refused(
        "mt-translate",
        _args(ck, out, tmp_path / "in.txt", extra=("--shard", shard)),
        tmp_path,
        outputs=[out],
        expect="--shard",
    )


def test_changed_input_or_model_on_rerun(ck, tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("the cat sees a dog\nthe red house\nthe old man\n", encoding="utf-8")
    mine = tmp_path / "run" / "checkpoint_last.pt"
    mine.parent.mkdir()
    shutil.copyfile(ck, mine)
    out = tmp_path / "out"
    assert run_cli("mt-translate", _args(mine, out, inp))[0] == 0
    inp.write_text("the dog sees a cat\nthe red house\nthe old man\n", encoding="utf-8")  # same size
    assert_refused("mt-translate", _args(mine, out, inp), tmp_path, expect="input in.txt changed since the job")
    inp.write_text("the cat sees a dog\nthe red house\nthe old man\n", encoding="utf-8")
    state = torch.load(mine, weights_only=True)
    ckpt.save_checkpoint(state, mine)  # saved again (training went on): another model, same name and size
    assert_refused("mt-translate", _args(mine, out, inp), tmp_path, expect="started with another model")
    assert_refused(
        "mt-translate", _args(mine, out, inp, extra=("--beam", "2")), tmp_path, expect="started with another"
    )


def test_input_missing_or_an_empty_folder(ck, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    for arg, expect in ((tmp_path / "nope.txt", "no such input"), (tmp_path / "empty", "holds no files")):
        assert_refused("mt-translate", _args(ck, out, arg), tmp_path, outputs=[out], expect=expect)
