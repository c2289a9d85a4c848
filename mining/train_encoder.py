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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mining.encoder_data import prepare_laser_data, prepare_student_data
from mining.encoders.laser import LaserLstmEncoder
from mining.laser_model import (
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
from mt.common.langs import ENGLISH, check_code
from mt.common.textio import check_outputs
from mt.data.dictionary import Dictionary
from mt.formats import checkpoint as ckpt
from mt.train.criterion import LabelSmoothedCrossEntropy
from mt.train.trainer import TrainConfig, train


# --- configuration ----------------------------------------------------------------------------------
@dataclass
class TrainerOptions:
    """The ``mt-train`` options these runs expose (same names and meaning)."""

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


@dataclass
class LaserTrainConfig:
    corpus: str
    save_dir: str
    langs: list[str] = field(default_factory=list)  # default: every language with English bitext
    exclude_langs: list[str] = field(default_factory=list)
    pivot: str = ""  # second target language (default: the one with the most bitext)
    arch: str = "laser_lstm_small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    vocab_size: int = 8000
    label_smoothing: float = 0.1
    export_checkpoint: str = "best"  # best | last
    trainer: TrainerOptions = field(default_factory=TrainerOptions)


@dataclass
class StudentTrainConfig:
    corpus: str
    save_dir: str
    teacher: str
    langs: list[str] = field(default_factory=list)  # the student's language(s)
    arch: str = "laser_lstm_small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    spm: str = "own"  # own | teacher
    vocab_size: int = 4000
    eng_sentences: int = 10000
    loss: str = "cosine"
    init_from_teacher: bool = False
    export_checkpoint: str = "best"
    teacher_batch_size: int = 64
    trainer: TrainerOptions = field(default_factory=lambda: TrainerOptions(sampling_temperature=5.0))


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
    from mining.embeddings import EmbeddingSet

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


def _add_model_args(p: argparse.ArgumentParser, default_arch: str) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", default=default_arch, choices=list(ARCHS), help="preset (default: %(default)s)")
    for name in OVERRIDABLE:
        if name == "align_loss":
            continue
        typ = float if name == "dropout" else int
        g.add_argument(f"--{name.replace('_', '-')}", type=typ, default=None, help="override the preset")


def _add_trainer_args(p: argparse.ArgumentParser, d: TrainerOptions) -> None:
    g = p.add_argument_group("training (as mt-train)")
    g.add_argument(
        "--max-tokens", type=int, default=d.max_tokens, help="padded tokens per batch (default: %(default)s)"
    )
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="max sentences per batch (default: no limit)")
    g.add_argument("--update-freq", type=int, default=d.update_freq, help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    g.add_argument("--warmup-updates", type=int, default=d.warmup_updates, help="(default: %(default)s)")
    g.add_argument("--clip-norm", type=float, default=d.clip_norm, help="0 = off (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    g.add_argument("--max-update", type=int, default=d.max_update, help="stop after N updates")
    g.add_argument("--max-epoch", type=int, default=d.max_epoch, help="stop after N epochs")
    g.add_argument(
        "--sampling-temperature",
        type=float,
        default=d.sampling_temperature,
        help="p(direction) ∝ n^(1/T) (default: %(default)s)",
    )
    g.add_argument("--virtual-epoch-size", type=int, default=0, help="sentences per epoch (default: all)")
    g.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fp32 master weights)")
    g.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is present")
    g.add_argument("--validate-interval-updates", type=int, default=0, help="also validate every N updates")
    g.add_argument("--save-interval-updates", type=int, default=0, help="save checkpoint_last.pt every N updates")
    g.add_argument("--keep-last-epochs", type=int, default=d.keep_last_epochs, help="(default: %(default)s)")
    g.add_argument("--log-interval", type=int, default=d.log_interval, help="(default: %(default)s)")
    g.add_argument("--no-progress-bar", action="store_true", help="plain log lines instead of a tqdm bar")
    g.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads per process (default: torch's, one per core); on a busy shared machine "
        "1 can be several times faster",
    )
    g.add_argument(
        "--export-checkpoint",
        choices=["best", "last"],
        default="best",
        help="which checkpoint becomes the encoder (best = lowest valid loss; default: %(default)s)",
    )


def _trainer_options(a: argparse.Namespace) -> TrainerOptions:
    names = TrainerOptions.__dataclass_fields__
    return TrainerOptions(**{k: getattr(a, k) for k in names})


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    out = {k: getattr(a, k) for k in OVERRIDABLE if getattr(a, k, None) is not None}
    if getattr(a, "align_loss", "none") != "none":
        out.update(align_loss=a.align_loss, align_weight=a.align_weight)
    return out


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mine-train-encoder",
        description="Train LASER-style sentence encoders for mining.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    lp = sub.add_parser(
        "laser",
        help="multilingual encoder trained through a translation decoder",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lp.add_argument("--corpus", required=True, help="corpus directory (train/eng_Latn-xxx.*, dev/)")
    lp.add_argument("--save-dir", required=True, help="output folder (encoder, checkpoints/, data/)")
    lp.add_argument("--langs", type=_csv, default=[], help="languages (default: every one with English bitext)")
    lp.add_argument("--exclude-langs", type=_csv, default=[], help="leave these out (e.g. a student's language)")
    lp.add_argument("--pivot", default="", help="second target language (default: the one with most bitext)")
    lp.add_argument("--vocab-size", type=int, default=8000, help="joint SentencePiece size (default: %(default)s)")
    lp.add_argument("--label-smoothing", type=float, default=0.1, help="(default: %(default)s)")
    lp.add_argument(
        "--align-loss",
        choices=list(ALIGN_LOSSES),
        default="none",
        help="extra term besides LASER's translation loss: ranking = in-batch translation ranking "
        "of source and target vectors (aligns languages in far fewer updates; default: none)",
    )
    lp.add_argument("--align-weight", type=float, default=1.0, help="weight of --align-loss (default: %(default)s)")
    _add_model_args(lp, LaserTrainConfig.arch)
    _add_trainer_args(lp, TrainerOptions())

    sp = sub.add_parser(
        "student",
        help="LASER3-style student distilled from a teacher encoder",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("--corpus", required=True, help="corpus directory (train/eng_Latn-xxx.*, dev/)")
    sp.add_argument("--save-dir", required=True, help="output folder (encoder, checkpoints/, data/)")
    sp.add_argument("--teacher", required=True, help="teacher encoder spec: a checkpoint path, laser2:DIR, e5, use")
    sp.add_argument("--langs", type=_csv, required=True, help="the student's language(s), e.g. xho_Latn")
    sp.add_argument(
        "--spm",
        choices=["own", "teacher"],
        default="own",
        help="SentencePiece: train one on the student's text, or use the teacher's (default: own)",
    )
    sp.add_argument("--vocab-size", type=int, default=4000, help="own SentencePiece size (default: %(default)s)")
    sp.add_argument(
        "--eng-sentences",
        type=int,
        default=10000,
        help="English sentences from the rest of the corpus added to English->teacher (default: %(default)s)",
    )
    sp.add_argument("--loss", choices=["cosine", "mse"], default="cosine", help="(default: %(default)s)")
    sp.add_argument(
        "--init-from-teacher",
        action="store_true",
        help="start from the teacher's weights (LASER-format teacher with --spm teacher)",
    )
    sp.add_argument("--teacher-batch-size", type=int, default=64, help="sentences per teacher call")
    _add_model_args(sp, StudentTrainConfig.arch)
    _add_trainer_args(sp, StudentTrainConfig(corpus="", save_dir="", teacher="").trainer)

    ep = sub.add_parser(
        "export",
        help="LASER-format encoder from a training checkpoint",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ep.add_argument("--checkpoint", required=True, help="e.g. DIR/checkpoints/checkpoint3.pt")
    ep.add_argument("--out", required=True, help="output .pt (the .spm and .cvocab go beside it)")
    ep.add_argument("--save-dir", help="the run's --save-dir (default: two levels above --checkpoint)")
    return p


def _export_cli(a: argparse.Namespace) -> int:
    checkpoint = Path(a.checkpoint)
    save = Path(a.save_dir) if a.save_dir else checkpoint.resolve().parent.parent
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
    out = Path(a.out)
    if out.suffix != ".pt":
        raise UserError(f"--out {out}: the encoder file must end in .pt (its .spm and .cvocab go beside it)")
    check_outputs({"--checkpoint": checkpoint}, {"--out": out})  # .spm / .cvocab beside it: never a .pt
    out = export_checkpoint(checkpoint, out, data / "bin" / "dict.txt", spm_model)
    print(json.dumps({"encoder": str(out)}))
    return 0


def cli(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if getattr(a, "threads", 0):
        torch.set_num_threads(a.threads)
    if a.cmd == "export":
        return _export_cli(a)
    if a.cmd == "laser":
        cfg = LaserTrainConfig(
            corpus=a.corpus,
            save_dir=a.save_dir,
            langs=a.langs,
            exclude_langs=a.exclude_langs,
            pivot=a.pivot,
            arch=a.arch,
            model_overrides=_overrides(a),
            vocab_size=a.vocab_size,
            label_smoothing=a.label_smoothing,
            export_checkpoint=a.export_checkpoint,
            trainer=_trainer_options(a),
        )
        summary = train_laser(cfg)
    else:
        cfg = StudentTrainConfig(
            corpus=a.corpus,
            save_dir=a.save_dir,
            teacher=a.teacher,
            langs=a.langs,
            arch=a.arch,
            model_overrides=_overrides(a),
            spm=a.spm,
            vocab_size=a.vocab_size,
            eng_sentences=a.eng_sentences,
            loss=a.loss,
            init_from_teacher=a.init_from_teacher,
            export_checkpoint=a.export_checkpoint,
            teacher_batch_size=a.teacher_batch_size,
            trainer=_trainer_options(a),
        )
        summary = train_student(cfg)
    return 143 if summary.get("stopped") else 0


def main(argv: list[str] | None = None) -> int:
    from mt.common.errors import cli_entry

    return cli_entry(cli)(argv)


if __name__ == "__main__":  # torchrun -m mining.train_encoder ...
    sys.exit(main())
