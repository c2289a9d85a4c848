"""mine-train-encoder: LASER models, the student, export to LASER formats, exact resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _encoder_corpus import make_encoder_corpus
from _mining_laser import make_spm, spm_pieces
from train_fixtures import one_thread  # noqa: F401 (autouse)

from mining.encoder_data import TEACHER_SPACE, corpus_bitexts, prepare_laser_data
from mining.encoders import load_encoder
from mining.encoders.laser import LaserTokenizer
from mining.laser_training import (
    ROW_OFFSET,
    DistillationLoss,
    LaserTranslationModel,
    StudentModel,
    arch_config,
    export_encoder,
)
from mining.train_encoder import (
    LaserTrainConfig,
    StudentTrainConfig,
    TrainerOptions,
    cli,
    laser_factory,
    train_laser,
    train_student,
)
from mining.xsim import XsimConfig, run_xsim
from mt.common.errors import UserError
from mt.data.dictionary import Dictionary
from mt.formats.checkpoint import load_checkpoint
from mt.formats.trainlog import TrainLog
from mt.train.trainer import TrainConfig, train

LANGS = ["eng_Latn", "fra_Latn"]


def _model(encoder: str = "lstm", vocab: int = 50, **kw) -> LaserTranslationModel:
    arch = "laser_lstm_tiny" if encoder == "lstm" else "laser_transformer_tiny"
    torch.manual_seed(0)
    return LaserTranslationModel(arch_config(arch, vocab_size=vocab, langs=LANGS, **kw)).eval()


def _rows(seqs: list[list[int]], lang_token: int = 40, pad: int = 1) -> torch.Tensor:
    """Loader-style source rows: __lang__ ids </s>, right-padded."""
    width = max(len(s) for s in seqs) + 2
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s) + 2] = torch.tensor([lang_token, *s, 2])
    return out


@pytest.mark.parametrize("encoder", ["lstm", "transformer"])
def test_pooled_embedding_shapes_and_padding(encoder):
    m = _model(encoder)
    short, long_ = [5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]
    with torch.no_grad():
        alone = m.embed(_rows([short]))
        batch = m.embed(_rows([short, long_]))
        other_lang = m.embed(_rows([short], lang_token=41))
    dim = m.cfg.sentence_dim
    assert alone.shape == (1, dim) and batch.shape == (2, dim)
    assert dim == (16 if encoder == "lstm" else 16)
    torch.testing.assert_close(batch[0], alone[0], atol=1e-6, rtol=1e-5)  # padding changes nothing
    torch.testing.assert_close(other_lang, alone)  # the encoder never sees the language token
    assert not torch.allclose(batch[1], batch[0])
    # translation forward: decoder states at the target positions only
    prev = torch.tensor([[42, 5, 6, 1], [42, 7, 8, 9]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    ctx = SimpleNamespace(tgt_lang=torch.tensor([0, 1]))
    h = m(_rows([short, long_]), prev, ctx, target_mask=mask, features_only=True)
    assert h.shape == (7, m.cfg.decoder_hidden_size)
    assert m(_rows([short, long_]), prev, ctx).shape == (2, 4, 50)


def test_decoder_sees_the_source_only_through_the_pooled_vector(monkeypatch):
    m = _model()
    prev = torch.tensor([[42, 5, 6]])
    ctx = SimpleNamespace(tgt_lang=torch.tensor([0]))
    with torch.no_grad():
        a = m(_rows([[5, 6, 7]]), prev, ctx)
        b = m(_rows([[9, 9, 9, 9, 9]]), prev, ctx)
        assert not torch.allclose(a, b)
        fixed = torch.randn(1, m.cfg.sentence_dim)
        monkeypatch.setattr(m, "embed", lambda src: fixed)
        torch.testing.assert_close(m(_rows([[5, 6, 7]]), prev, ctx), m(_rows([[9, 9, 9, 9, 9]]), prev, ctx))
        # the target language embedding changes the decoder's output
        other_lang = SimpleNamespace(tgt_lang=torch.tensor([1]))
        assert not torch.allclose(m(_rows([[5]]), prev, ctx), m(_rows([[5]]), prev, other_lang))


@pytest.fixture(scope="module")
def spm_dict(tmp_path_factory):
    """A SentencePiece model and a dictionary over its pieces (+ two language tokens), as training has."""
    d = tmp_path_factory.mktemp("spm")
    spm_path = make_spm(d / "x.spm", vocab_size=120)
    dictionary = Dictionary()
    for p in spm_pieces(spm_path):
        dictionary.add_symbol(p)
    for code in LANGS:
        dictionary.add_symbol(f"__{code}__")
    return spm_path, dictionary


SENTS = ["The cat sits on the mat.", "Open the file, then close the window!", "le chat", "x"]


@pytest.mark.parametrize("encoder,hidden", [("lstm", None), ("lstm", 192), ("transformer", None)])
def test_export_round_trip_through_load_encoder(spm_dict, tmp_path, encoder, hidden):
    spm_path, dictionary = spm_dict
    overrides = {"encoder_hidden_size": hidden} if hidden else {}
    m = _model(encoder, vocab=len(dictionary), **overrides)
    out = export_encoder(m.encoder, m.cfg, dictionary, spm_path, tmp_path / "laser2.pt", {"kind": "laser"})
    assert out.with_suffix(".spm").read_bytes() == spm_path.read_bytes()
    assert Dictionary.load(out.with_suffix(".cvocab")).symbols == dictionary.symbols
    ckpt = torch.load(out, weights_only=True)
    if encoder == "lstm":  # LASER2's layout: params are exactly LASER's constructor arguments
        assert set(ckpt) == {"params", "model", "dictionary", "nllb_mini"}
        assert set(ckpt["params"]) == {
            "num_embeddings",
            "padding_idx",
            "embed_dim",
            "hidden_size",
            "num_layers",
            "bidirectional",
            "left_pad",
            "padding_value",
        }
        piece = dictionary.symbols[10]
        assert ckpt["dictionary"][piece] == 10
    assert ckpt["nllb_mini"]["sentence_dim"] == m.cfg.sentence_dim
    enc = load_encoder(str(tmp_path))  # the directory (laser2.pt inside) and the file itself
    enc_file = load_encoder(str(out))
    assert enc.dim == m.cfg.sentence_dim == (2 * hidden if hidden else 16)
    got = enc.encode(SENTS, "eng_Latn")
    np.testing.assert_array_equal(got, enc_file.encode(SENTS, "eng_Latn"))
    # reference: the training model's own pooled vectors of the same pieces
    tok = LaserTokenizer(spm_path)
    ids = [[dictionary.index(p) for p in pieces] for pieces in tok.pieces(SENTS)]
    with torch.no_grad():
        ref = torch.cat([m.embed(_rows([s], lang_token=dictionary.index("__eng_Latn__"))) for s in ids]).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_distillation_loss():
    teacher = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    target = torch.tensor([2, 0]) + ROW_OFFSET
    exact = teacher[[2, 0]] * 3.0  # cosine ignores the scale
    out = DistillationLoss("cosine")(exact, teacher, target)
    assert out.ntokens == 2 and float(out.loss) == pytest.approx(0.0, abs=1e-6)
    opposite = DistillationLoss("cosine")(-teacher[[2, 0]], teacher, target)
    assert float(opposite.loss) / np.log(2) == pytest.approx(4.0, rel=1e-5)  # (1 - (-1)) per sentence, x ln 2
    mse = DistillationLoss("mse")(teacher[[2, 0]] + 0.5, teacher, target)
    assert float(mse.loss) / np.log(2) == pytest.approx(2 * 8 * 0.25, rel=1e-5)
    with pytest.raises(UserError):
        DistillationLoss("l1")


def test_student_model_needs_the_teachers_dimension():
    m = StudentModel(arch_config("laser_lstm_tiny", vocab_size=30, decoder_hidden_size=0))
    with pytest.raises(UserError, match="dimension"):
        m.set_teacher(torch.zeros(4, 10))
    m.set_teacher(torch.zeros(4, 16))
    h = m(_rows([[5, 6]]), torch.tensor([[7]]), target_mask=torch.tensor([[True]]))
    assert h.shape == (1, 16)


# --- end to end on a tiny corpus ----------------------------------------------------------------------
OPTS = dict(max_tokens=400, lr=5e-3, warmup_updates=10, log_interval=5, no_progress_bar=True, clip_norm=1.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_encoder_corpus(tmp_path_factory.mktemp("corpus"))


TINY = {
    "encoder_embed_dim": 32,
    "encoder_hidden_size": 16,
    "decoder_embed_dim": 32,
    "decoder_hidden_size": 64,
    "align_loss": "ranking",
    "align_weight": 1.0,
}


def _laser_cfg(corpus: Path, save: Path, **trainer) -> LaserTrainConfig:
    return LaserTrainConfig(
        corpus=str(corpus),
        save_dir=str(save),
        exclude_langs=["xho_Latn"],
        pivot="fra_Latn",
        arch="laser_lstm_tiny",
        vocab_size=60,
        model_overrides=TINY,
        label_smoothing=0.0,
        trainer=TrainerOptions(**{**OPTS, "lr": 1e-2, "max_update": 300, **trainer}),
    )


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny LASER model trained on deu/fra (xho left out: the student's language)."""
    save = tmp_path_factory.mktemp("laser")
    summary = train_laser(_laser_cfg(corpus, save, validate_interval_updates=100))
    return save, summary


def test_laser_training_learns_and_exports(trained, corpus):
    save, summary = trained
    assert summary["num_updates"] == 300 and Path(summary["encoder"]) == save / "laser2.pt"
    log = TrainLog(save / "checkpoints" / "train_log.jsonl").read()
    start = next(r for r in log if r["type"] == "start")
    assert start["lang_pairs"] == ["deu_Latn-eng_Latn", "fra_Latn-eng_Latn", "deu_Latn-fra_Latn", "eng_Latn-fra_Latn"]
    train_recs = [r for r in log if r["type"] == "train"]
    assert train_recs[-1]["loss"] < train_recs[0]["loss"] - 2.0, train_recs
    assert train_recs[-1]["aux"]["align"] < 0.5 * train_recs[0]["aux"]["align"]  # the ranking term is logged
    valid = [r for r in log if r["type"] == "valid"]
    assert len(valid) >= 3 and valid[-1]["loss"] < valid[0]["loss"]
    info = torch.load(save / "laser2.pt", weights_only=True)["nllb_mini"]
    assert info["kind"] == "laser" and info["targets"] == ["eng_Latn", "fra_Latn"]
    # the encoder aligns translations far better than the same network untrained
    trained_rows = run_xsim(XsimConfig(encoder=str(save), corpus=str(corpus), langs=["deu_Latn", "fra_Latn"]))
    state = torch.load(save / "laser2.pt", weights_only=True)
    torch.manual_seed(1)
    fresh = laser_factory(
        TrainConfig(arch="laser_lstm_tiny", model_overrides=TINY), Dictionary.load(save / "data" / "bin" / "dict.txt")
    )[1]
    export_encoder(
        fresh.encoder,
        fresh.cfg,
        Dictionary.load(save / "data" / "bin" / "dict.txt"),
        save / "laser2.spm",
        save / "random" / "laser2.pt",
    )
    random_rows = run_xsim(XsimConfig(encoder=str(save / "random"), corpus=str(corpus), langs=["deu_Latn", "fra_Latn"]))
    for t, r in zip(trained_rows, random_rows):
        assert t["xsim_error"] < r["xsim_error"] - 0.3, (trained_rows, random_rows)
    assert state["params"]["hidden_size"] == 16


def test_rerun_skips_data_and_resumes(trained, corpus, capsys):
    save, _ = trained
    bin_file = next((save / "data" / "bin").glob("train.*.bin"))
    mtime = bin_file.stat().st_mtime_ns
    capsys.readouterr()
    train_laser(_laser_cfg(corpus, save))
    assert "already finished" in capsys.readouterr().err
    assert bin_file.stat().st_mtime_ns == mtime


def test_resume_is_exact(corpus, tmp_path):
    """Stop at update 4, resume to 8: the same weights as 8 updates in one go (dropout on)."""
    plan = prepare_laser_data(corpus, tmp_path / "data", langs=["deu_Latn", "fra_Latn"], vocab_size=60)

    def cfg(save: Path, n: int) -> TrainConfig:
        return TrainConfig(
            data=plan.bin_dir,
            lang_pairs=plan.directions,
            save_dir=str(save),
            arch="laser_lstm_tiny",
            model_overrides={"dropout": 0.2, "encoder_layers": 2},
            max_tokens=200,
            lr=3e-3,
            warmup_updates=2,
            max_update=n,
            save_interval_updates=2,
            log_interval=1,
            no_progress_bar=True,
            label_smoothing=0.1,
        )

    train(cfg(tmp_path / "ref", 8), model_factory=laser_factory)
    train(cfg(tmp_path / "run", 4), model_factory=laser_factory)
    train(cfg(tmp_path / "run", 8), model_factory=laser_factory)
    a = load_checkpoint(tmp_path / "ref" / "checkpoint_last.pt")["model"]
    b = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def losses(run: str) -> list:
        return [
            (r["update"], r["loss"])
            for r in TrainLog(tmp_path / run / "train_log.jsonl").read()
            if r["type"] == "train"
        ]

    assert losses("run") == losses("ref")


def test_student_learns_the_teachers_space(trained, corpus, tmp_path):
    teacher_dir, _ = trained
    save = tmp_path / "xho"
    cfg = StudentTrainConfig(
        corpus=str(corpus),
        save_dir=str(save),
        teacher=str(teacher_dir),
        langs=["xho_Latn"],
        arch="laser_lstm_tiny",
        vocab_size=60,
        eng_sentences=100,
        trainer=TrainerOptions(**{**OPTS, "lr": 1e-2}, max_update=150, sampling_temperature=5.0),
    )
    summary = train_student(cfg)
    out = save / "laser3-xho_Latn.v1.pt"
    assert summary["encoders"] == [str(out)] and out.with_suffix(".spm").is_file()
    log = TrainLog(save / "checkpoints" / "train_log.jsonl").read()
    assert next(r for r in log if r["type"] == "start")["lang_pairs"] == [
        f"xho_Latn-{TEACHER_SPACE}",
        f"eng_Latn-{TEACHER_SPACE}",
    ]
    losses = [r["loss"] for r in log if r["type"] == "train"]
    assert losses[0] > 0.5 and losses[-1] < 0.6 * losses[0], losses  # mean cosine distance to the teacher
    # the teacher's embeddings were computed once, as an EmbeddingSet of every English sentence
    meta = json.loads((save / "data" / "teacher" / "eng_Latn.meta.json").read_text())
    assert meta["dim"] == 32 and meta["total"] >= 60
    # the student loads through every route, with its own SentencePiece model
    for spec in (str(save), str(out), f"laser3:{save}:xho_Latn"):
        assert load_encoder(spec).dim == 32
    student_rows = run_xsim(
        XsimConfig(encoder=str(save), eng_encoder=str(teacher_dir), corpus=str(corpus), langs=["xho_Latn"])
    )
    teacher_rows = run_xsim(XsimConfig(encoder=str(teacher_dir), corpus=str(corpus), langs=["xho_Latn"]))
    assert student_rows[0]["xsim_error"] < teacher_rows[0]["xsim_error"], (student_rows, teacher_rows)


def test_student_from_the_teachers_weights_and_vocabulary(trained, corpus, tmp_path):
    """--spm teacher --init-from-teacher: the student starts as the teacher (same shape, same pieces), so
    its English is already on the teacher's embeddings at update 0."""
    teacher_dir, _ = trained
    save = tmp_path / "init"
    cfg = StudentTrainConfig(
        corpus=str(corpus),
        save_dir=str(save),
        teacher=str(teacher_dir),
        langs=["xho_Latn"],
        arch="laser_lstm_tiny",
        spm="teacher",
        init_from_teacher=True,
        eng_sentences=50,
        trainer=TrainerOptions(**{**OPTS, "max_update": 5, "log_interval": 1}),
    )
    train_student(cfg)
    student = load_encoder(str(save))
    assert student.tokenizer.path.read_bytes() == (teacher_dir / "laser2.spm").read_bytes()
    log = TrainLog(save / "checkpoints" / "train_log.jsonl").read()
    first = next(r for r in log if r["type"] == "train")
    assert first["loss"] < 0.3, first  # a fresh student starts near 1 (the distillation test above)
    with pytest.raises(UserError, match="--spm teacher"):
        train_student(
            StudentTrainConfig(
                corpus=str(corpus),
                save_dir=str(tmp_path / "bad"),
                teacher=str(teacher_dir),
                langs=["xho_Latn"],
                init_from_teacher=True,
            )
        )


def test_ranking_term_only_when_asked():
    from mt.models.config import ForwardContext

    prev = torch.tensor([[42, 5, 6], [42, 7, 1]])
    src = _rows([[5, 6], [9, 9, 9]])
    for align, expect in (("none", set()), ("ranking", {"align"})):
        m = _model(align_loss=align).train()
        ctx = ForwardContext(tgt_lang=torch.tensor([0, 1]))
        m(src, prev, ctx)
        assert set(ctx.aux_losses) == expect
    m.eval()
    ctx = ForwardContext(tgt_lang=torch.tensor([0, 1]))
    m(src, prev, ctx)
    assert not ctx.aux_losses  # validation scores the translation loss only
    # the term is small when each source vector is nearest to its own target's
    with torch.no_grad():
        tgt_as_src = _rows([[5, 6], [7]], lang_token=42)
        sent = m.embed(tgt_as_src)
        assert float(m.align_loss(sent, prev)) < float(m.align_loss(sent.flip(0), prev))


def test_bad_inputs_are_user_errors(corpus, tmp_path, capsys):
    assert set(corpus_bitexts(corpus)) == {"deu_Latn", "fra_Latn", "xho_Latn"}
    with pytest.raises(UserError, match="no English bitext for them"):
        prepare_laser_data(corpus, tmp_path / "d", langs=["zul_Latn"])
    with pytest.raises(UserError, match="at least two languages"):
        prepare_laser_data(corpus, tmp_path / "d", langs=["deu_Latn"])
    with pytest.raises(UserError, match="no train/ folder"):
        corpus_bitexts(tmp_path / "nowhere")
    with pytest.raises(SystemExit):
        from mining.cli import train_encoder_main

        train_encoder_main(["laser", "--corpus", str(corpus), "--save-dir", str(tmp_path / "x"), "--pivot", "zul_Latn"])
    err = capsys.readouterr().err
    assert err.startswith("error: --pivot zul_Latn") and err.count("\n") == 1


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["laser", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("mine-train-encoder student", "--teacher", "mine-eval xsim", "--max-tokens", "--bf16", "torchrun"):
        assert text in out


def test_preparing_data_never_deletes_a_folder_the_toolkit_did_not_write(corpus, tmp_path):
    """``--data-dir`` may be a user's folder: its own ``text/`` survives; the toolkit's own output is replaced."""
    mine = tmp_path / "data" / "text"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes\n")
    with pytest.raises(UserError, match="not written by this toolkit"):
        prepare_laser_data(corpus, tmp_path / "data", langs=["deu_Latn", "fra_Latn"], vocab_size=60)
    assert (mine / "notes.txt").read_text() == "my notes\n"
    (mine / "notes.txt").unlink()
    prepare_laser_data(corpus, tmp_path / "data", langs=["deu_Latn", "fra_Latn"], vocab_size=60)
    stale = mine / "train" / "leftover.txt"  # out of date: re-prepared over the toolkit's own folder
    stale.write_text("x\n")
    (mine / "prepared.json").write_text('{"fingerprint": "of an earlier run"}')
    prepare_laser_data(corpus, tmp_path / "data", langs=["deu_Latn", "fra_Latn"], vocab_size=60)
    assert not stale.exists()
