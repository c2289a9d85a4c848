"""mine-train-encoder's flags: its own from its configs, the training ones from mt-train's TrainConfig."""

from dataclasses import fields

from mining.train_encoder import (
    TRAINER_FLAGS,
    ExportConfig,
    LaserTrainConfig,
    StudentTrainConfig,
    TrainerOptions,
    _run_config,
    build_parser,
)
from mt.common.flags import from_args
from mt.train.trainer import TrainConfig


def _subparser(name: str):
    return build_parser()._subparsers._group_actions[0].choices[name]


def test_trainer_flags_are_train_config_fields():
    assert set(TRAINER_FLAGS) <= {f.name for f in fields(TrainConfig)}


def test_laser_defaults_and_overrides():
    a = build_parser().parse_args(["laser", "--corpus", "c", "--save-dir", "s"])
    cfg = _run_config(LaserTrainConfig, a, align=True)
    assert cfg == LaserTrainConfig(corpus="c", save_dir="s", model_overrides={"align_loss": "none"})
    argv = ["laser", "--corpus", "c", "--save-dir", "s", "--langs", "deu_Latn, fra_Latn", "--align-loss", "ranking"]
    argv += ["--encoder-layers", "3", "--lr", "0.01", "--keep-last-epochs", "-1", "--no-progress-bar"]
    cfg = _run_config(LaserTrainConfig, build_parser().parse_args(argv), align=True)
    assert cfg.langs == ["deu_Latn", "fra_Latn"]
    assert cfg.model_overrides == {"encoder_layers": 3, "align_loss": "ranking", "align_weight": 1.0}
    assert cfg.trainer == TrainerOptions(lr=0.01, keep_last_epochs=-1, no_progress_bar=True)


def test_student_defaults():
    a = build_parser().parse_args(["student", "--corpus", "c", "--save-dir", "s", "--teacher", "e5", "--langs", "x"])
    cfg = _run_config(StudentTrainConfig, a, align=False)
    assert cfg == StudentTrainConfig(corpus="c", save_dir="s", teacher="e5", langs=["x"])
    assert cfg.trainer.sampling_temperature == 5.0 and cfg.model_overrides == {}


def test_training_flags_have_mt_train_help_with_this_command_defaults():
    text = " ".join(_subparser("laser").format_help().split())
    assert "max padded tokens per batch, source or target whichever larger (default: 4000)" in text
    assert "log every N updates (default: 50)" in text and "-1 = all (default: 1)" in text
    assert "(default: 5.0)" in _subparser("student").format_help()


def test_export_flags():
    a = build_parser().parse_args(["export", "--checkpoint", "c.pt", "--out", "e.pt"])
    assert from_args(ExportConfig, a) == ExportConfig(checkpoint="c.pt", out="e.pt", save_dir="")
