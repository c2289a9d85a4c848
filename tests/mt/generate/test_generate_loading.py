"""Finding a checkpoint's dict.txt / spm.model from any working directory (the data path is recorded as typed,
often relative to where mt-train ran), and the per-save model id."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from decode_fixtures import make_checkpoint
from hostile import run_cli
from train_fixtures import one_thread  # noqa: F401 (autouse)

from mt.common.errors import UserError
from mt.formats import checkpoint as ckpt
from mt.generate.loading import load_model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("load"))


def _project(built, root: Path, train_config: dict, resolved: dict | None = None) -> Path:
    """``root/bin`` (the data) and ``root/ck/run1/checkpoint_best.pt`` saved with ``train_config``, as if
    ``mt-train`` had run in ``root``; returns the checkpoint path."""
    ck, data = built
    shutil.copytree(data, root / "bin")
    state = torch.load(ck, weights_only=True)
    state["train_config"] = train_config
    state.pop("resolved_paths", None)
    if resolved is not None:
        state["resolved_paths"] = resolved
    path = root / "ck" / "run1" / "checkpoint_best.pt"
    path.parent.mkdir(parents=True)
    ckpt.save_checkpoint(state, path)
    return path


def test_relative_data_path_resolves_from_another_working_directory(built, tmp_path, monkeypatch):
    """A checkpoint trained with ``mt-train bin --save-dir ck/run1`` (relative paths), used from elsewhere."""
    path = _project(built, tmp_path / "proj", {"data": "bin", "save_dir": "ck/run1"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    loaded = load_model(path)
    assert loaded.data_dir.resolve() == (tmp_path / "proj" / "bin").resolve() and loaded.spm is not None
    (tmp_path / "in.txt").write_text("a big house\nthe cat\n", encoding="utf-8")
    rc, _, err = run_cli(
        "mt-translate",
        [
            tmp_path / "in.txt",
            "--path",
            path,
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--out",
            tmp_path / "o",
            "--no-progress-bar",
        ],
    )
    assert rc == 0, err
    assert len((tmp_path / "o" / "deu_Latn" / "in.txt").read_text(encoding="utf-8").splitlines()) == 2
    # the whole project moved: still found, from the checkpoint's place under the recorded save_dir
    shutil.move(tmp_path / "proj", tmp_path / "moved")
    assert (
        load_model(tmp_path / "moved" / "ck" / "run1" / "checkpoint_best.pt").data_dir.resolve()
        == (tmp_path / "moved" / "bin").resolve()
    )


def test_absolute_path_recorded_at_save_time_is_used(built, tmp_path, monkeypatch):
    """The checkpoint was copied out of its save_dir: the absolute path written at save time finds the data."""
    root = tmp_path / "proj"
    resolved = {"data": str(root / "bin"), "spm_model": ""}
    path = _project(built, root, {"data": "bin", "save_dir": "checkpoints"}, resolved)
    lone = tmp_path / "shipped" / "model.pt"
    lone.parent.mkdir()
    shutil.copyfile(path, lone)
    monkeypatch.chdir(tmp_path / "shipped")
    assert load_model(lone).data_dir == root / "bin"
    shutil.rmtree(root / "bin")
    with pytest.raises(UserError, match="cannot find the dictionary.*pass --data DIR"):
        load_model(lone)


def test_every_save_gets_its_own_id_and_copies_share_it(built, tmp_path):
    ck, _ = built
    state = torch.load(ck, weights_only=True)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    ckpt.save_checkpoint(state, a, copies=[tmp_path / "a_copy.pt"])
    ckpt.save_checkpoint(state, b)
    ids = [ckpt.model_id(p) for p in (a, tmp_path / "a_copy.pt", b)]
    assert ids[0] == ids[1] != ids[2] and ids[0].startswith("save:")
    assert ckpt.model_id(a, ckpt.load_checkpoint(a)) == ids[0]
