"""Hostile and careless set-ups for mt-train: each ends in a one-line error, a non-zero exit and no change
but the run's own lock file (tests/hostile.py checks all three; a refused run removes a save dir it created)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from hostile import assert_refused
from train_fixtures import make_corpus, one_thread  # noqa: F401 (autouse)

from mt.common.files import exclusive_lock
from mt.train.cli import train_main as main

PAIRS = (("deu_Latn", "eng_Latn"),)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLLB_MINI_HOME", str(tmp_path / "home" / "nllb-mini"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("hostile_train"), PAIRS, sizes={"deu_Latn-eng_Latn": 16}, n_valid=2)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A save dir after two updates (checkpoint_last.pt, checkpoint_best.pt, train_log.jsonl, .lock)."""
    save = tmp_path_factory.mktemp("hostile_train_ck") / "ck"
    assert main(_args(data, save)) == 0
    return save


def _args(data: Path, save: Path, *extra: str) -> list[str]:
    return [
        str(data),
        "--lang-pairs",
        "eng_Latn-deu_Latn",
        "--arch",
        "transformer_tiny",
        "--save-dir",
        str(save),
        "--max-tokens",
        "256",
        "--max-update",
        "2",
        "--log-interval",
        "1",
        "--no-progress-bar",
        *extra,
    ]


def test_save_dir_under_a_file(data, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    assert_refused(
        "mt-train", _args(data, f / "ck"), tmp_path, expect=f"--save-dir {f / 'ck'}: {f} is a file, not a folder"
    )
    assert_refused("mt-train", _args(data, f), tmp_path, expect=f"--save-dir {f} is a file")


def test_save_dir_in_use_by_another_run(data, tmp_path):
    save = tmp_path / "ck"
    save.mkdir()
    with exclusive_lock(save, "--save-dir"):  # what a running mt-train holds
        assert_refused("mt-train", _args(data, save), tmp_path, expect=f"is in use by pid {os.getpid()}")


def _copy(trained: Path, dest: Path) -> Path:
    shutil.copytree(trained, dest)
    return dest


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_tampered_checkpoint_to_resume_from(data, trained, tmp_path):
    save = _copy(trained, tmp_path / "ck")
    state = torch.load(save / "checkpoint_last.pt", weights_only=True)
    state["model"]["extra"] = _RunsCode(tmp_path / "ran")
    torch.save(state, save / "checkpoint_last.pt")
    msg = assert_refused(
        "mt-train", _args(data, save, "--max-update", "4"), tmp_path, expect="refused to load it", allow=["ck/.lock"]
    )
    assert "tampered" in msg and "delete" not in msg and not (tmp_path / "ran").exists()


def test_tampered_finetune_from_model(data, trained, tmp_path):
    bad = tmp_path / "pretrained.pt"
    state = torch.load(trained / "checkpoint_last.pt", weights_only=True)
    state["best"] = _RunsCode(tmp_path / "ran")
    torch.save(state, bad)
    msg = assert_refused(
        "mt-train",
        _args(data, tmp_path / "ft", "--finetune-from-model", str(bad)),
        tmp_path,
        outputs=[tmp_path / "ft"],
        expect="refused to load it",
    )
    assert str(bad) in msg and not (tmp_path / "ran").exists()


def test_truncated_checkpoint_to_resume_from(data, trained, tmp_path):
    save = _copy(trained, tmp_path / "ck")
    blob = (save / "checkpoint_last.pt").read_bytes()
    (save / "checkpoint_last.pt").write_bytes(blob[: len(blob) // 3])
    assert_refused(
        "mt-train", _args(data, save, "--max-update", "4"), tmp_path, expect="corrupt or truncated", allow=["ck/.lock"]
    )


def test_missing_data_dir(tmp_path):
    assert_refused(
        "mt-train",
        _args(tmp_path / "no-such-bin", tmp_path / "ck"),
        tmp_path,
        outputs=[tmp_path / "ck"],
        expect="data directory not found",
    )


def test_data_dir_without_a_dictionary(tmp_path):
    (tmp_path / "bin").mkdir()
    assert_refused(
        "mt-train", _args(tmp_path / "bin", tmp_path / "ck"), tmp_path, outputs=[tmp_path / "ck"], expect="dict.txt"
    )


def test_data_dir_is_a_file(tmp_path):
    f = tmp_path / "bin"
    f.write_text("not a folder\n")
    assert_refused(
        "mt-train", _args(f, tmp_path / "ck"), tmp_path, outputs=[tmp_path / "ck"], expect="data directory not found"
    )
