"""mt-import on wrong or broken inputs: one ``error:`` line naming the file and the fix, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")
import hostile  # noqa: E402
import nllb_fixtures as nf  # noqa: E402

from mt.importing.cli import import_main as main  # noqa: E402


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
    return hostile.assert_refused(
        "mt-import",
        ["--format", fmt, str(src), "--out", str(out), *extra],
        tmp_path,
        outputs=[out / "checkpoint.pt", out / "dict.txt", out / "spm.model"],
        expect=expect,
    )


def test_not_a_folder(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    _refused(tmp_path, tmp_path / "model.bin", "not a folder")
    _refused(tmp_path, tmp_path / "missing", "not a folder")


@pytest.mark.parametrize(
    "key,value,expect",
    [
        ("model_type", "nllb-moe", "no layer is sparse"),  # NllbMoeConfig's step 4 in a 2-layer model
        ("model_type", "marian", "m2m_100"),
        ("activation_function", "gelu", "activation_function"),
        ("scale_embedding", False, "scale_embedding"),
        ("vocab_size", 123, "vocab_size 123"),
    ],
)
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
    hostile.assert_refused(
        "mt-import", ["--format", "hf", str(files["hf"]), "--out", str(tmp_path / "out")], tmp_path, expect="is a file"
    )


def test_fairseq_output_would_replace_an_input(files, tmp_path):
    ckpt = nf.make_fairseq_files(tmp_path / "fs", files["model"], files["spm"])
    (tmp_path / "fs" / "dictionary.txt").rename(tmp_path / "fs" / "dict.txt")
    hostile.assert_refused(
        "mt-import",
        ["--format", "fairseq", str(ckpt), "--out", str(tmp_path / "fs"), "--force"],
        tmp_path,
        expect="same file",
    )


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
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(tmp_path / "other"),
        vocab_size=60,
        model_type="bpe",
        minloglevel=2,
        hard_vocab_limit=False,
    )
    _refused(tmp_path, ckpt, "belong to different models", "--spm-model", str(tmp_path / "other.model"), fmt="fairseq")


# --- NLLB-MoE -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    return nf.built_moe(tmp_path_factory)


def _fairseq_moe(moe, tmp_path, ranks=4):
    return nf.make_fairseq_moe_files(tmp_path / "fs", moe["model"], moe["spm"], ranks=ranks)


def test_moe_config_over_dense_weights(files, tmp_path):
    folder = _hf_copy(
        files,
        tmp_path,
        lambda c: c.update({"model_type": "nllb-moe", "encoder_sparse_step": 2, "decoder_sparse_step": 2}),
    )
    _refused(tmp_path, folder, "ff_layer_norm.weight is missing")


def test_moe_sparse_steps_that_differ(moe, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(moe["hf"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["decoder_sparse_step"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    _refused(tmp_path, folder, "decoder_sparse_step 4 differ")


def test_moe_router_with_a_bias(moe, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(moe["hf"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["router_bias"] = True
    (folder / "config.json").write_text(json.dumps(config))
    _refused(tmp_path, folder, "router_bias")


def test_fairseq_moe_expert_file_missing(moe, tmp_path):
    shared = _fairseq_moe(moe, tmp_path)
    (shared.parent / "checkpoint_2_300000-rank-2.pt").unlink()
    msg = _refused(tmp_path, shared, "incomplete", fmt="fairseq")
    assert "checkpoint_2_300000-rank-2.pt" in msg


def test_fairseq_moe_without_expert_files(moe, tmp_path):
    shared = _fairseq_moe(moe, tmp_path)
    for f in shared.parent.glob("*-rank-*.pt"):
        f.unlink()
    _refused(tmp_path, shared, "no checkpoint_2_300000-rank-N.pt", fmt="fairseq")


def test_fairseq_moe_given_as_a_plain_checkpoint(moe, tmp_path):
    shared = _fairseq_moe(moe, tmp_path)
    plain = shared.with_name("checkpoint_2_300000.pt")
    shared.rename(plain)
    _refused(tmp_path, plain, "-shared.pt", fmt="fairseq")


def test_fairseq_moe_expert_file_of_another_kind(moe, tmp_path):
    shared = _fairseq_moe(moe, tmp_path)
    rank = shared.with_name("checkpoint_2_300000-rank-1.pt")
    with nf.fake_omegaconf():  # the pickle names omegaconf's classes
        state = torch.load(rank, weights_only=False)
        state["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(2)
        torch.save(state, rank)
    _refused(tmp_path, shared, "not an expert tensor", fmt="fairseq")


def test_fairseq_moe_expert_file_with_code_is_refused(moe, tmp_path):
    import os

    from test_import_fairseq import _Call

    shared = _fairseq_moe(moe, tmp_path)
    marker = tmp_path / "pwned"
    rank = shared.with_name("checkpoint_2_300000-rank-3.pt")
    with nf.fake_omegaconf():
        state = torch.load(rank, weights_only=False)
        state["extra_state"]["hook"] = _Call(os.system, f"touch {marker}")
        torch.save(state, rank)
    msg = _refused(tmp_path, shared, "refused to load", fmt="fairseq")
    assert "rank-3" in msg and not marker.exists()


def test_moe_expert_files_of_an_earlier_import_need_force(moe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint-rank-9.pt").write_bytes(b"old")
    _refused(tmp_path, moe["hf"], "checkpoint-rank-9.pt")
    assert main(["--format", "hf", str(moe["hf"]), "--out", str(out), "--force"]) == 0
    assert not (out / "checkpoint-rank-9.pt").exists()  # not this model's: removed
    assert len(list(out.glob("checkpoint-rank-*.pt"))) == 8


def test_export_of_an_imported_model_with_another_spm_is_refused(files, tmp_path, monkeypatch):
    """mt-export writes an imported model's tokenizer as NllbTokenizer's files (ids = SentencePiece ids + 1):
    a SentencePiece model that does not number the model's pieces so is refused before anything is written."""
    import sentencepiece as spm

    text = tmp_path / "other.txt"
    text.write_text("\n".join(f"lorem ipsum dolor sit amet {i} consectetur adipiscing" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(tmp_path / "other"),
        vocab_size=60,
        model_type="bpe",
        minloglevel=2,
        hard_vocab_limit=False,
    )
    hostile.assert_refused(
        "mt-export",
        [
            "--path",
            str(files["out"] / "checkpoint.pt"),
            "--out",
            str(tmp_path / "x"),
            "--spm-model",
            str(tmp_path / "other.model"),
        ],
        tmp_path,
        outputs=[tmp_path / "x"],
        expect="not the vocabulary layout of the NLLB models",
    )
