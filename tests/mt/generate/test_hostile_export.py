"""mt-export on hostile input: each case a one-line error, a non-zero exit, no --out created and nothing
under the test's folder changed (tests/hostile.py)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from decode_fixtures import make_checkpoint
from hostile import assert_refused
from train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

from mt.formats import checkpoint as ckpt
from mt.models.config import TransformerConfig
from mt.models.transformer import build_model


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("hostile_export"))[0]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLLB_MINI_HOME", str(tmp_path / "home" / "nllb"))


class _Shell:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _refused(tmp_path, path, expect: str | None = None, fmt: str = "hf", out=None, extra=()):
    out = out if out is not None else tmp_path / "out"
    return assert_refused(
        "mt-export", ["--format", fmt, "--path", path, "--out", out, *extra], tmp_path, outputs=[out], expect=expect
    )


def test_bad_checkpoint_paths(tmp_path):
    _refused(tmp_path, tmp_path / "missing.pt", "not found")
    (tmp_path / "ckdir").mkdir()
    _refused(tmp_path, tmp_path / "ckdir")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    _refused(tmp_path, tmp_path / "notes.txt")


def test_pickles_that_are_not_checkpoints(tmp_path):
    (tmp_path / "dict.pt").write_bytes(pickle.dumps({"model": [1, 2, 3]}))
    _refused(tmp_path, tmp_path / "dict.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "torch.pt")
    _refused(tmp_path, tmp_path / "torch.pt")
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Shell(str(marker))))
    _refused(tmp_path, tmp_path / "evil.pt")
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path, ck):
    data = ck.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _refused(tmp_path, tmp_path / "cut.pt")


def test_out_that_cannot_be_a_folder(tmp_path, ck):
    (tmp_path / "file").write_text("x")
    _refused(tmp_path, ck, "is a file", out=tmp_path / "file" / "out")
    _refused(tmp_path, ck, "is a file", out=tmp_path / "file" / "a" / "b", fmt="ctranslate2")
    _refused(tmp_path, ck, "not a folder", out=tmp_path / "file")


def test_non_empty_out_without_force(tmp_path, ck):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    _refused(tmp_path, ck, "--force", fmt="ctranslate2")


def test_bad_options(tmp_path, ck):
    _refused(tmp_path, ck, "invalid choice", fmt="onnx")
    _refused(tmp_path, ck, "--quantization", extra=["--quantization", "int8"])
    pytest.importorskip("ctranslate2")
    _refused(tmp_path, ck, "quantization", fmt="ctranslate2", extra=["--quantization", "int3"])


def test_moe_checkpoint(tmp_path, ck):
    state = ckpt.load_checkpoint(ck)
    state["model_config"].update(moe_freq=2, moe_expert_count=4)
    state["model"] = build_model(TransformerConfig.from_dict(state["model_config"])).state_dict()
    ckpt.save_checkpoint(state, tmp_path / "moe.pt")
    _refused(tmp_path, tmp_path / "moe.pt", "Mixture-of-Experts")
