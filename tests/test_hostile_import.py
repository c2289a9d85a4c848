"""mt-import on wrong or broken inputs: one ``error:`` line naming the file and the fix, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("transformers")
import hostile  # noqa: E402
import nllb_fixtures as nf  # noqa: E402

from mt.importing.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return nf.built(tmp_path_factory)


@pytest.fixture(autouse=True)
def import_cli(monkeypatch, tmp_path):
    """``assert_refused`` finds console scripts by name; mt-import is not installed in the shared venv yet."""
    orig = hostile.cli
    monkeypatch.setattr(hostile, "cli", lambda name: main if name == "mt-import" else orig(name))
    monkeypatch.setenv("HOME", str(tmp_path))


def _hf_copy(files, tmp_path, edit_config=None):
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    if edit_config:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def _refused(tmp_path, src, expect, *extra, fmt="hf"):
    out = tmp_path / "out"
    return hostile.assert_refused("mt-import", ["--format", fmt, str(src), "--out", str(out), *extra], tmp_path,
                                  outputs=[out / "checkpoint.pt", out / "dict.txt", out / "spm.model"], expect=expect)  # fmt: skip


def test_not_a_folder(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    _refused(tmp_path, tmp_path / "model.bin", "not a folder")
    _refused(tmp_path, tmp_path / "missing", "not a folder")


@pytest.mark.parametrize("key,value,expect", [
    ("model_type", "nllb-moe", "not supported yet"),
    ("model_type", "marian", "m2m_100"),
    ("activation_function", "gelu", "activation_function"),
    ("scale_embedding", False, "scale_embedding"),
    ("vocab_size", 123, "vocab_size 123"),
])  # fmt: skip
def test_config_our_transformer_does_not_compute(files, tmp_path, key, value, expect):
    folder = _hf_copy(files, tmp_path, lambda c: c.update({key: value}))
    _refused(tmp_path, folder, expect)


def test_truncated_weights(files, tmp_path):
    folder = _hf_copy(files, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _refused(tmp_path, folder, "not a valid safetensors file")


def test_missing_tensor(files, tmp_path):
    folder = _hf_copy(files, tmp_path)
    model = nf.random_m2m100(nf.hf_config(files["model"].config.vocab_size, layers=1))
    model.save_pretrained(folder)  # one layer's weights under a two-layer config.json
    (folder / "config.json").write_text((files["hf"] / "config.json").read_text())
    _refused(tmp_path, folder, "is missing")


def test_tokenizer_files_without_languages(files, tmp_path):
    folder = _hf_copy(files, tmp_path)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink()
    _refused(tmp_path, folder, "no language codes")


def test_sentencepiece_model_of_another_model(files, tmp_path):
    other = nf.train_spm(tmp_path / "other", vocab_size=300)
    folder = _hf_copy(files, tmp_path)
    _refused(tmp_path, folder, "does not belong", "--spm-model", str(other))


def test_existing_outputs_need_force(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dict.txt").write_text("keep 1\n")
    _refused(tmp_path, files["hf"], "--force")
    assert main(["--format", "hf", str(files["hf"]), "--out", str(out), "--force"]) == 0
    assert (out / "dict.txt").read_text() != "keep 1\n"


def test_out_is_a_file(files, tmp_path):
    (tmp_path / "out").write_text("x")
    hostile.assert_refused("mt-import", ["--format", "hf", str(files["hf"]), "--out", str(tmp_path / "out")],
                           tmp_path, expect="is a file")  # fmt: skip


def test_fairseq_output_would_replace_an_input(files, tmp_path):
    ckpt = nf.make_fairseq_files(tmp_path / "fs", files["model"], files["spm"])
    (tmp_path / "fs" / "dictionary.txt").rename(tmp_path / "fs" / "dict.txt")
    hostile.assert_refused("mt-import", ["--format", "fairseq", str(ckpt), "--out", str(tmp_path / "fs"), "--force"],
                           tmp_path, expect="same file")  # fmt: skip


def test_fairseq_truncated_checkpoint(files, tmp_path):
    ckpt = nf.make_fairseq_files(tmp_path / "fs", files["model"], files["spm"])
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    _refused(tmp_path, ckpt, "not a readable PyTorch checkpoint", fmt="fairseq")


def test_fairseq_without_dictionary(files, tmp_path):
    ckpt = nf.make_fairseq_files(tmp_path / "fs", files["model"], files["spm"])
    (tmp_path / "fs" / "dictionary.txt").unlink()
    _refused(tmp_path, ckpt, "--dict", fmt="fairseq")


def test_fairseq_dictionary_of_another_model(files, tmp_path):
    import sentencepiece as spm

    ckpt = nf.make_fairseq_files(tmp_path / "fs", files["model"], files["spm"])
    text = tmp_path / "other.txt"
    text.write_text("\n".join(f"lorem ipsum dolor sit amet {i} consectetur adipiscing" for i in range(200)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "other"), vocab_size=60,
                                   model_type="bpe", minloglevel=2, hard_vocab_limit=False)  # fmt: skip
    _refused(tmp_path, ckpt, "belong to different models", "--spm-model", str(tmp_path / "other.model"), fmt="fairseq")


def test_export_of_an_imported_model_with_another_spm_is_refused(files, tmp_path, monkeypatch):
    """mt-export writes an imported model's tokenizer as NllbTokenizer's files (ids = SentencePiece ids + 1):
    a SentencePiece model that does not number the model's pieces so is refused before anything is written."""
    import sentencepiece as spm

    text = tmp_path / "other.txt"
    text.write_text("\n".join(f"lorem ipsum dolor sit amet {i} consectetur adipiscing" for i in range(200)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "other"), vocab_size=60,
                                   model_type="bpe", minloglevel=2, hard_vocab_limit=False)  # fmt: skip
    hostile.assert_refused("mt-export", ["--path", str(files["out"] / "checkpoint.pt"), "--out", str(tmp_path / "x"),
                                         "--spm-model", str(tmp_path / "other.model")],
                           tmp_path, outputs=[tmp_path / "x"], expect="not the vocabulary layout of the NLLB models")  # fmt: skip
