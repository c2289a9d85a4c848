"""mt-train's flags come from TrainConfig and ModelFlags: parsing, defaults and overrides."""

from dataclasses import asdict, fields

import pytest

from mt.models.config import EXTENSION_FIELDS, OVERRIDABLE
from mt.train.cli import build_parser, config_from_args, train_main
from mt.train.moe_flags import ModelFlags
from mt.train.trainer import TrainConfig


def _cfg(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["bin", "--lang-pairs", "eng_Latn-deu_Latn", *argv]))


def test_defaults_are_the_config_defaults():
    cfg = _cfg()
    expected = TrainConfig(data="bin", lang_pairs=["eng_Latn-deu_Latn"])
    assert cfg == expected and cfg.adam_betas == [0.9, 0.98] and cfg.model_overrides == {}


def test_lists_betas_and_fields_parse_as_before():
    cfg = _cfg(
        "--lang-pairs",
        "a_Latn-b_Latn, b_Latn-a_Latn",
        "--adam-betas",
        "(0.9, 0.999)",
        "--add-langs",
        "fuv_Latn=eng_Latn,xho_Latn",
        "--lr",
        "0.001",
        "--bf16",
        "--no-progress-bar",
        "--spike-skip",
        "3",
    )
    assert cfg.lang_pairs == ["a_Latn-b_Latn", "b_Latn-a_Latn"]
    assert cfg.adam_betas == [0.9, 0.999] and cfg.add_langs == ["fuv_Latn=eng_Latn", "xho_Latn"]
    assert (cfg.lr, cfg.bf16, cfg.no_progress_bar, cfg.spike_skip) == (0.001, True, True, 3)


def test_only_given_model_flags_become_overrides():
    cfg = _cfg("--encoder-layers", "2", "--dropout", "0.3", "--moe-cmr", "--moe-freq", "2", "--cmr-gate-loss-wt", "0.1")
    assert cfg.model_overrides == {"encoder_layers": 2, "dropout": 0.3, "moe_cmr": True, "moe_freq": 2}
    assert cfg.cmr_gate_loss_wt == 0.1


def test_model_flags_cover_every_overridable_field():
    assert {f.name for f in fields(ModelFlags)} == set(OVERRIDABLE) | set(EXTENSION_FIELDS)
    assert set(asdict(ModelFlags()).values()) == {None}


def test_bad_betas_are_a_user_error(capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["bin", "--lang-pairs", "eng_Latn-deu_Latn", "--adam-betas", "(0.9,"])
    assert exc.value.code == 2 and "--adam-betas '(0.9,': expected two numbers" in capsys.readouterr().err
