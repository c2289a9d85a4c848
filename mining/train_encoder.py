"""``mine-train-encoder``: train sentence encoders for mining with ``mt.train.trainer``'s loop.

Sub-commands::

    laser    a LASER-style multilingual encoder (Artetxe & Schwenk 2019): BiLSTM (or Transformer)
             encoder, max-pooled, trained as the encoder of a translation model whose LSTM decoder sees
             only the pooled vector, on every language -> English and -> a pivot language
    student  a LASER3-style student for a new language (Heffernan et al. 2022): trained to map its
             sentences (and English) onto a frozen teacher's embeddings of the English side
    export   write the LASER-format encoder of any checkpoint of the two (e.g. an epoch checkpoint)

Training is ``mt.train.trainer.train`` with another model family plugged in (``mt.train.trainer.ModelFactory``): the
multilingual temperature sampler, ``--max-tokens`` batching, bf16 autocast, atomic checkpoints with
exact resume, torchrun data parallelism, ``train_log.jsonl`` and the progress bar are the same code as
``mt-train``. Outputs in ``--save-dir DIR``: ``data/`` (prepared data, see ``mining.encoder_data``),
``checkpoints/`` (the trainer's), and the encoder in LASER's formats:

    laser:    DIR/laser2.pt + laser2.spm + laser2.cvocab        (--encoder DIR, or laser2:DIR)
    student:  DIR/laser3-{lang}.v1.pt + .spm + .cvocab           (--encoder DIR, or laser3:DIR:{lang})

Re-running the same command skips finished data steps and resumes training where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from mining.encoder_data import prepare_laser_data, prepare_student_data
from mining.encoders.laser import LaserLstmEncoder
from mining.laser_training import (
    ALIGN_LOSSES,
    ARCHS,
    OVERRIDABLE,
    DistillationLoss,
    LaserModelConfig,
    LaserTranslationModel,
    StudentModel,
    arch_config,
    export_encoder,
)
from mt.common import distributed
from mt.common.errors import UserError
from mt.common.flags import add_flags, arg, from_args
from mt.common.langs import ENGLISH, check_code
from mt.common.textio import check_outputs
from mt.data.dictionary import Dictionary
from mt.formats import checkpoint as ckpt
from mt.train.criterion import LabelSmoothedCrossEntropy
from mt.train.trainer import TrainConfig, train

# --- configuration ----------------------------------------------------------------------------------
# Each field with ``arg`` is also a flag. The mt-train options these runs expose are TrainConfig's fields
# (same flag, help and meaning: ``add_flags(only=TRAINER_FLAGS, defaults=...)``), with the defaults below.
_TRAINING = "training (as mt-train)"
_MODEL = "model"
_CORPUS = "corpus directory (train/eng_Latn-xxx.*, dev/)"
_SAVE_DIR = "output folder (encoder, checkpoints/, data/)"
_EXPORT = "which checkpoint becomes the encoder (best = lowest valid loss; default: %(default)s)"


@dataclass
class TrainerOptions:
    """The ``mt-train`` options these runs expose (same names and meaning), with this command's defaults."""

    max_tokens: int = 4000
    batch_size: int = 0
    update_freq: int = 1
    lr: float = 1e-3
    warmup_updates: int = 500
    clip_norm: float = 5.0
    weight_decay: float = 0.0
    max_update: int = 0
    max_epoch: int = 0
    sampling_temperature: float = 2.0
    virtual_epoch_size: int = 0
    seed: int = 1
    bf16: bool = False
    cpu: bool = False
    validate_interval_updates: int = 0
    save_interval_updates: int = 0
    keep_last_epochs: int = 1
    log_interval: int = 50
    no_progress_bar: bool = False


TRAINER_FLAGS = tuple(f.name for f in fields(TrainerOptions))


@dataclass
class LaserTrainConfig:
    corpus: str = arg(help=_CORPUS, required=True)
    save_dir: str = arg(help=_SAVE_DIR, required=True)
    langs: list[str] = arg([], "languages (default: every one with English bitext)")
    exclude_langs: list[str] = arg([], "leave these out (e.g. a student's language)")
    pivot: str = arg("", "second target language (default: the one with most bitext)")
    arch: str = arg("laser_lstm_small", "preset", choices=list(ARCHS), group=_MODEL)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # EncoderModelFlags.overrides()
    vocab_size: int = arg(8000, "joint SentencePiece size")
    label_smoothing: float = arg(0.1)
    export_checkpoint: str = arg("best", _EXPORT, choices=["best", "last"], show_default=False, group=_TRAINING)
    trainer: TrainerOptions = field(default_factory=TrainerOptions)


@dataclass
class StudentTrainConfig:
    corpus: str = arg(help=_CORPUS, required=True)
    save_dir: str = arg(help=_SAVE_DIR, required=True)
    teacher: str = arg(help="teacher encoder spec: a checkpoint path, laser2:DIR, e5, use", required=True)
    langs: list[str] = arg([], "the student's language(s), e.g. xho_Latn", required=True)
    arch: str = arg("laser_lstm_small", "preset", choices=list(ARCHS), group=_MODEL)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # EncoderModelFlags.overrides()
    spm: str = arg(
        "own",
        "SentencePiece: train one on the student's text, or use the teacher's",
        choices=["own", "teacher"],
    )
    vocab_size: int = arg(4000, "own SentencePiece size")
    eng_sentences: int = arg(10000, "English sentences from the rest of the corpus added to English->teacher")
    loss: str = arg("cosine", choices=["cosine", "mse"])
    init_from_teacher: bool = arg(False, "start from the teacher's weights (LASER-format teacher with --spm teacher)")
    export_checkpoint: str = arg("best", _EXPORT, choices=["best", "last"], show_default=False, group=_TRAINING)
    teacher_batch_size: int = arg(64, "sentences per teacher call", show_default=False)
    trainer: TrainerOptions = field(default_factory=lambda: TrainerOptions(sampling_temperature=5.0))


@dataclass
class EncoderModelFlags:
    """Preset overrides (None = the preset's) and LASER's optional alignment loss; they go to ``model_overrides``."""

    align_loss: str = arg(
        "none",
        "extra term besides LASER's translation loss: ranking = in-batch translation ranking "
        "of source and target vectors (aligns languages in far fewer updates; default: none)",
        choices=list(ALIGN_LOSSES),
        show_default=False,
    )
    align_weight: float = arg(1.0, "weight of --align-loss")
    encoder_embed_dim: int | None = arg(None, "override the preset", group=_MODEL)
    encoder_hidden_size: int | None = arg(None, "override the preset", group=_MODEL)
    encoder_layers: int | None = arg(None, "override the preset", group=_MODEL)
    encoder_ffn_embed_dim: int | None = arg(None, "override the preset", group=_MODEL)
    encoder_attention_heads: int | None = arg(None, "override the preset", group=_MODEL)
    decoder_embed_dim: int | None = arg(None, "override the preset", group=_MODEL)
    decoder_hidden_size: int | None = arg(None, "override the preset", group=_MODEL)
    decoder_lang_embed_dim: int | None = arg(None, "override the preset", group=_MODEL)
    dropout: float | None = arg(None, "override the preset", group=_MODEL)

    def overrides(self, align: bool) -> dict[str, Any]:
        """The given settings; with ``align`` (laser runs) also ``align_loss``, and its weight when one is on."""
        out = {k: getattr(self, k) for k in OVERRIDABLE if k != "align_loss" and getattr(self, k) is not None}
        if align:
            out["align_loss"] = self.align_loss
            if self.align_loss != "none":
                out["align_weight"] = self.align_weight
        return out


_ALIGN = ("align_loss", "align_weight")


@dataclass
class ExportConfig:
    checkpoint: str = arg(help="e.g. DIR/checkpoints/checkpoint3.pt", required=True)
    out: str = arg(help="output .pt (the .spm and .cvocab go beside it)", required=True)
    save_dir: str = arg("", "the run's --save-dir (default: two levels above --checkpoint)")


@dataclass
class CpuOptions:
    threads: int = arg(
        0,
        "torch CPU threads per process (default: torch's, one per core); on a busy shared machine "
        "1 can be several times faster",
        group=_TRAINING,
    )


def _train_config(
    opts: TrainerOptions,
    data: str,
    directions: list[str],
    save_dir: Path,
    arch: str,
    overrides: dict[str, Any],
    label_smoothing: float = 0.0,
) -> TrainConfig:
    return TrainConfig(
        data=data,
        lang_pairs=directions,
        save_dir=str(save_dir / "checkpoints"),
        arch=arch,
        model_overrides=dict(overrides),
        label_smoothing=label_smoothing,
        **asdict(opts),
    )


# --- model factories (mt.train.trainer.ModelFactory) --------------------------------------------------------
def laser_factory(cfg: TrainConfig, dictionary: Dictionary, base: dict[str, Any] | None = None):
    """LaserTranslationModel from ``--arch`` + overrides; label-smoothed cross-entropy (``base``, the starting
    checkpoint's config, is not used: the flags define the model and a resumed run checks it matches)."""
    overrides = {k: v for k, v in cfg.model_overrides.items() if k in OVERRIDABLE}
    mc = arch_config(
        cfg.arch,
        **overrides,
        vocab_size=len(dictionary),
        padding_idx=dictionary.pad(),
        langs=dictionary.langs(),
        max_source_positions=cfg.max_source_positions,
    )
    weight = float(cfg.model_overrides.get("align_weight", 1.0))
    return mc, LaserTranslationModel(mc), LabelSmoothedCrossEntropy(cfg.label_smoothing, {"align": weight})


def student_config(
    arch: str, overrides: dict[str, Any], dim: int, dictionary: Dictionary, max_source_positions: int = 512
) -> LaserModelConfig:
    """The student's shape: the preset, overridden, with the sentence dimension set to the teacher's."""
    values = {k: v for k, v in overrides.items() if k in OVERRIDABLE}
    base = ARCHS.get(arch, {})
    if base.get("encoder") == "lstm":
        if dim % 2:
            raise UserError(
                f"the teacher's dimension {dim} is odd: a BiLSTM student cannot match it; "
                "use --arch laser_transformer_small"
            )
        values["encoder_hidden_size"] = dim // 2
    elif base:
        values["encoder_embed_dim"] = dim
    return arch_config(
        arch,
        **values,
        decoder_embed_dim=0,
        decoder_hidden_size=0,
        decoder_lang_embed_dim=0,
        vocab_size=len(dictionary),
        padding_idx=dictionary.pad(),
        langs=dictionary.langs(),
        max_source_positions=max_source_positions,
    )


def student_factory(
    cfg: TrainConfig,
    dictionary: Dictionary,
    base: dict[str, Any] | None = None,
    *,
    teacher_emb: str,
    loss: str,
    init_state: dict[str, torch.Tensor] | None = None,
):
    """StudentModel whose ``output_weight`` is the teacher's English embedding table; DistillationLoss."""
    from mining.embedding_store import EmbeddingSet

    table = torch.from_numpy(EmbeddingSet.open(teacher_emb).load()).to(torch.float16)
    mc = student_config(cfg.arch, cfg.model_overrides, table.shape[1], dictionary, cfg.max_source_positions)
    model = StudentModel(mc)
    if init_state is not None:
        _init_from(model.encoder, init_state)
    model.set_teacher(table)
    return mc, model, DistillationLoss(loss)


def _init_from(encoder: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy the teacher's encoder weights (same architecture; the student's extra embedding rows for
    language tokens keep their initialisation)."""
    own = encoder.state_dict()
    bad = [k for k in own if k not in state or (state[k].shape != own[k].shape and k != "embed_tokens.weight")]
    if bad:
        raise UserError(
            f"--init-from-teacher: the teacher's encoder does not match the student's architecture "
            f"({bad[:4]}); use the teacher's shape (--arch/--encoder-* flags) or drop the flag"
        )
    with torch.no_grad():
        for k, v in own.items():
            if k == "embed_tokens.weight":
                rows = min(v.shape[0], state[k].shape[0])
                if state[k].shape[1] != v.shape[1]:
                    raise UserError("--init-from-teacher: embedding dimensions differ; use the teacher's --arch")
                v[:rows].copy_(state[k][:rows])
            else:
                v.copy_(state[k])


# --- export -----------------------------------------------------------------------------------------
def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    dictionary: str | Path,
    spm_model: str | Path,
    info: dict[str, Any] | None = None,
) -> Path:
    """The encoder of an ``mine-train-encoder`` training checkpoint -> LASER format at ``out`` (.pt)."""
    state = ckpt.load_checkpoint(checkpoint)
    mc = LaserModelConfig.from_dict(state["model_config"])
    if "encoder" not in state.get("model_config", {}):
        raise UserError(f"{checkpoint}: not a mine-train-encoder checkpoint (an mt-train translation model?)")
    model = LaserTranslationModel(mc) if mc.decoder_hidden_size > 0 else StudentModel(mc)
    model.load_state_dict(state["model"])
    d = Dictionary.load(dictionary)
    info = dict(
        info or {},
        checkpoint=str(checkpoint),
        num_updates=int(state["num_updates"]),
        lang_pairs=list(state.get("lang_pairs", [])),
        code_version=state.get("code_version"),
    )
    return export_encoder(model.encoder, mc, d, spm_model, out, info)


def _pick_checkpoint(save_dir: Path, which: str) -> Path:
    best, last = save_dir / "checkpoints" / ckpt.BEST, save_dir / "checkpoints" / ckpt.LAST
    if which == "best" and best.is_file():
        return best
    if last.is_file():
        return last
    raise UserError(f"{last}: no checkpoint to export (training saved none)")


# --- the two runs -----------------------------------------------------------------------------------
def _prepare_on_master(di: distributed.DistInfo, fn, *args, **kw):
    """Data preparation writes files: rank 0 does it, the other ranks get its result."""
    plan = fn(*args, **kw) if di.is_master else None
    return distributed.broadcast_object(plan)


def train_laser(cfg: LaserTrainConfig) -> dict[str, Any]:
    """Prepare the data, train, export ``{save_dir}/laser2.pt`` (+ .spm, .cvocab)."""
    if cfg.arch not in ARCHS:
        raise UserError(f"unknown --arch {cfg.arch!r}; choose from {', '.join(ARCHS)}")
    save = Path(cfg.save_dir)
    di = distributed.setup(cfg.trainer.cpu)
    plan = _prepare_on_master(
        di,
        prepare_laser_data,
        cfg.corpus,
        save / "data",
        cfg.langs,
        cfg.exclude_langs,
        cfg.pivot,
        cfg.vocab_size,
        seed=cfg.trainer.seed,
    )
    tc = _train_config(
        cfg.trainer, plan.bin_dir, plan.directions, save, cfg.arch, cfg.model_overrides, cfg.label_smoothing
    )
    summary = train(tc, model_factory=laser_factory)
    if summary.get("stopped") or not di.is_master:
        return summary
    info = {
        "kind": "laser",
        "langs": [ENGLISH, *plan.langs],
        "targets": [ENGLISH, plan.pivot],
        "corpus": str(cfg.corpus),
    }
    out = export_checkpoint(
        _pick_checkpoint(save, cfg.export_checkpoint),
        save / "laser2.pt",
        Path(plan.bin_dir) / "dict.txt",
        plan.spm_model,
        info,
    )
    print(
        f"mine-train-encoder: encoder written to {out} (+ .spm, .cvocab); use it with --encoder {save}", file=sys.stderr
    )
    return {**summary, "encoder": str(out)}


def train_student(cfg: StudentTrainConfig) -> dict[str, Any]:
    """Teacher embeddings once, then train the student; export ``laser3-{lang}.v1.pt`` per language."""
    from mining.encoders import load_encoder

    if not cfg.langs:
        raise UserError("--langs is required: the student's language(s), e.g. --langs xho_Latn")
    for c in cfg.langs:
        check_code(c, "--langs")
    if cfg.arch not in ARCHS:
        raise UserError(f"unknown --arch {cfg.arch!r}; choose from {', '.join(ARCHS)}")
    save = Path(cfg.save_dir)
    di = distributed.setup(cfg.trainer.cpu)
    teacher = load_encoder(
        cfg.teacher, batch_size=cfg.teacher_batch_size, bf16=False, device="cpu" if cfg.trainer.cpu else None
    )
    if cfg.init_from_teacher and (getattr(teacher, "model", None) is None or cfg.spm != "teacher"):
        raise UserError(
            "--init-from-teacher needs a LASER-format teacher (a checkpoint path, laser2:DIR) and "
            "--spm teacher (the student must share its vocabulary)"
        )
    plan = _prepare_on_master(
        di,
        prepare_student_data,
        cfg.corpus,
        save / "data",
        cfg.langs,
        teacher,
        cfg.teacher,
        spm=cfg.spm,
        vocab_size=cfg.vocab_size,
        eng_sentences=cfg.eng_sentences,
        seed=cfg.trainer.seed,
        progress=not cfg.trainer.no_progress_bar,
    )
    init_state, arch, overrides = None, cfg.arch, dict(cfg.model_overrides)
    if cfg.init_from_teacher:
        module = teacher.model
        init_state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        if isinstance(module, LaserLstmEncoder):  # the student takes the teacher's shape
            if ARCHS[arch]["encoder"] != "lstm":
                arch = "laser_lstm_small"
            overrides.update(encoder_embed_dim=module.embed_tokens.embedding_dim, encoder_layers=module.lstm.num_layers)
    tc = _train_config(cfg.trainer, plan.bin_dir, plan.directions, save, arch, overrides)
    factory = functools.partial(student_factory, teacher_emb=plan.teacher_emb, loss=cfg.loss, init_state=init_state)
    summary = train(tc, model_factory=factory)
    if summary.get("stopped") or not di.is_master:
        return summary
    info = {
        "kind": "student",
        "langs": [ENGLISH, *plan.langs],
        "teacher": cfg.teacher,
        "teacher_name": getattr(teacher, "name", cfg.teacher),
        "loss": cfg.loss,
        "corpus": str(cfg.corpus),
    }
    src = _pick_checkpoint(save, cfg.export_checkpoint)
    outs = []
    for i, lang in enumerate(plan.langs):
        out = save / f"laser3-{lang}.v1.pt"
        if i == 0:
            export_checkpoint(src, out, Path(plan.bin_dir) / "dict.txt", plan.spm_model, info)
        else:  # one student for a language group: the same files under each language's name
            for ext in (".pt", ".spm", ".cvocab"):
                shutil.copyfile(outs[0].with_suffix(ext), out.with_suffix(ext))
        outs.append(out)
    print(
        f"mine-train-encoder: student written to {', '.join(map(str, outs))} (+ .spm, .cvocab); embed "
        f"{', '.join(plan.langs)} with --encoder {outs[0]} and English with the teacher {cfg.teacher}",
        file=sys.stderr,
    )
    return {**summary, "encoders": [str(o) for o in outs]}


# --- CLI --------------------------------------------------------------------------------------------
EPILOG = (
    """examples:
  # a LASER-style BiLSTM on the demo corpus (all languages into English and French), a few CPU minutes
  mine-train-encoder laser --corpus work/demo/corpus --save-dir work/enc/laser --bf16 --max-update 600
  mine-eval xsim --encoder work/enc/laser --corpus work/demo/corpus --split devtest

  # the same without Xhosa, then a student for Xhosa taught by it (its own SentencePiece)
  mine-train-encoder laser --corpus work/demo/corpus --exclude-langs xho_Latn --save-dir work/enc/teacher
  mine-train-encoder student --corpus work/demo/corpus --teacher work/enc/teacher --langs xho_Latn \\
      --save-dir work/enc/xho --max-update 400
  mine-eval xsim --encoder work/enc/xho --eng-encoder work/enc/teacher --corpus work/demo/corpus --langs xho_Latn

  # students of pretrained teachers (the student takes the teacher's dimension)
  mine-train-encoder student --corpus work/demo/corpus --teacher use --langs nso_Latn --save-dir work/enc/nso-use
  # a Transformer student initialised from nothing, MSE loss; data parallel on 2 processes
  torchrun --standalone --nproc_per_node 2 -m mining.train_encoder student --teacher e5 --langs mya_Mymr \\
      --arch laser_transformer_small --loss mse --corpus work/demo/corpus --save-dir work/enc/mya

Outputs: DIR/laser2.pt (laser) or DIR/laser3-LANG.v1.pt (student) with .spm and .cvocab beside it, in
LASER's checkpoint formats (BiLSTM: {"params", "model", "dictionary"}); DIR/checkpoints/ (train_log.jsonl,
checkpoint_last.pt, checkpoint_best.pt); DIR/data/ (prepared data, teacher embeddings). Re-running a
command resumes. Presets (--arch): """
    + ", ".join(ARCHS)
    + "."
)


def _add_run_flags(p: argparse.ArgumentParser, cls: type, trainer: TrainerOptions, align: bool) -> None:
    """A run's flags: its own, the model's, then mt-train's (this command's defaults) in one group."""
    add_flags(p, cls, exclude=("arch", "export_checkpoint"))
    if align:
        add_flags(p, EncoderModelFlags, only=_ALIGN)
    add_flags(p, cls, only=("arch",))
    add_flags(p, EncoderModelFlags, exclude=_ALIGN)
    add_flags(p, TrainConfig, only=TRAINER_FLAGS, defaults=asdict(trainer), group=_TRAINING)
    add_flags(p, CpuOptions)
    add_flags(p, cls, only=("export_checkpoint",))


def _run_config(cls: type, a: argparse.Namespace, align: bool) -> Any:
    """``cls`` by keyword from the parsed flags, with the model overrides and the trainer options."""
    trainer = TrainerOptions(**{k: getattr(a, k) for k in TRAINER_FLAGS})
    overrides = from_args(EncoderModelFlags, a).overrides(align)
    return from_args(cls, a, model_overrides=overrides, trainer=trainer)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mine-train-encoder",
        description="Train LASER-style sentence encoders for mining.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    kw: dict[str, Any] = {"epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}
    lp = sub.add_parser("laser", help="multilingual encoder trained through a translation decoder", **kw)
    _add_run_flags(lp, LaserTrainConfig, TrainerOptions(), align=True)
    sp = sub.add_parser("student", help="LASER3-style student distilled from a teacher encoder", **kw)
    _add_run_flags(sp, StudentTrainConfig, StudentTrainConfig(corpus="", save_dir="", teacher="").trainer, align=False)
    ep = sub.add_parser("export", help="LASER-format encoder from a training checkpoint", **kw)
    add_flags(ep, ExportConfig)
    return p


def _export_cli(cfg: ExportConfig) -> int:
    checkpoint = Path(cfg.checkpoint)
    save = Path(cfg.save_dir) if cfg.save_dir else checkpoint.resolve().parent.parent
    data = save / "data"
    prepared = data / "prepared.json"
    if (data / "spm" / "spm.model").is_file():
        spm_model = data / "spm" / "spm.model"
    elif prepared.is_file():  # a student with the teacher's SentencePiece: that model is in the exports
        spms = sorted(save.glob("laser3-*.spm"))
        if not spms:
            raise UserError(f"{save}: cannot find the SentencePiece model of this run")
        spm_model = spms[0]
    else:
        raise UserError(f"{data}: no prepared data of a mine-train-encoder run; pass --save-dir")
    out = Path(cfg.out)
    if out.suffix != ".pt":
        raise UserError(f"--out {out}: the encoder file must end in .pt (its .spm and .cvocab go beside it)")
    check_outputs({"--checkpoint": checkpoint}, {"--out": out})  # .spm / .cvocab beside it: never a .pt
    out = export_checkpoint(checkpoint, out, data / "bin" / "dict.txt", spm_model)
    print(json.dumps({"encoder": str(out)}))
    return 0


def cli(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.cmd == "export":
        return _export_cli(from_args(ExportConfig, a))
    threads = from_args(CpuOptions, a).threads
    if threads:
        torch.set_num_threads(threads)
    if a.cmd == "laser":
        summary = train_laser(_run_config(LaserTrainConfig, a, align=True))
    else:
        summary = train_student(_run_config(StudentTrainConfig, a, align=False))
    return 143 if summary.get("stopped") else 0


def main(argv: list[str] | None = None) -> int:
    from mt.common.errors import cli_entry

    return cli_entry(cli)(argv)


if __name__ == "__main__":  # torchrun -m mining.train_encoder ...
    sys.exit(main())
