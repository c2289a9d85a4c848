"""mt-eval's flags come from the config dataclasses: each command's config is built by keyword from its
flags, the defaults are the dataclasses', and old spellings still parse (hidden from --help)."""

from __future__ import annotations

import dataclasses

import pytest

import eval.chatterbot
import eval.gettext_domains
from eval.chatterbot import ChatterbotTaskConfig
from eval.cli import build_parser
from eval.cli import eval_main as main
from eval.gettext_domains import GettextTaskConfig
from eval.metrics import CompareConfig, ScoreConfig
from eval.report import ReportConfig
from eval.tables import DirConfig
from eval.toxicity import ToxicityConfig
from eval.translate_test import TranslateTestConfig
from mt.common.flags import from_args


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_every_report_flag_lands_in_its_own_field():
    names = [f.name for f in dataclasses.fields(ReportConfig)]
    argv = ["RUN"] + [x for n in names[1:] for x in ("--" + n.replace("_", "-"), n.upper())]
    cfg = from_args(ReportConfig, parse("report", *argv))
    assert cfg == ReportConfig(run_dir="RUN", **{n: n.upper() for n in names[1:]})


def test_toxicity_languages_cannot_swap():
    ns = parse("toxicity", "--toxicity-dir", "T", "--tgt-lang", "deu_Latn", "--src-lang", "eng_Latn")
    cfg = from_args(ToxicityConfig, ns)
    assert (cfg.src_lang, cfg.tgt_lang, cfg.toxicity_dir) == ("eng_Latn", "deu_Latn", "T")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["score", "--hyp", "h", "--ref", "r"], ScoreConfig(hyp="h", ref="r")),
        (["dir", "G", "--ref-dir", "R"], DirConfig(gen_dir="G", ref_dir="R")),
        (["compare", "A", "B", "--ref", "R"], CompareConfig(baseline="A", system="B", ref="R")),
        (["report", "RUN"], ReportConfig(run_dir="RUN")),
        (["translate-test", "--task", "T", "--out", "O"], TranslateTestConfig(task="T", out="O")),
    ],
)
def test_cli_defaults_are_the_configs(argv, expected):
    assert from_args(type(expected), parse(*argv)) == expected


def test_lists_and_metavar_flags():
    ns = parse("dir", "G", "--ref-dir", "R", "--metrics", "chrf++", "spbleu", "--workers", "3")
    assert from_args(DirConfig, ns).metrics == ["chrf++", "spbleu"] and ns.workers == 3
    ns = parse("translate-test", "--task", "T", "--out", "O", "--langs", "deu_Latn, fra_Latn", "--methods", "zero_shot")
    cfg = from_args(TranslateTestConfig, ns, progress=True)
    assert cfg.langs == ["deu_Latn", "fra_Latn"] and cfg.methods == ["zero_shot"] and cfg.C is None
    assert parse("translate-test", "--task", "T", "--out", "O", "--C", "3").C == 3.0


@pytest.mark.parametrize(
    "cmd", [["build-classification", "--out", "O"], ["translate-test", "--task", "T", "--out", "O"]]
)
def test_old_spellings_are_hidden_aliases(cmd, capsys):
    assert parse(*cmd, "--no-progress").no_progress_bar is True
    assert parse(*cmd, "--no-progress-bar").no_progress_bar is True
    assert parse(*cmd).no_progress_bar is False
    with pytest.raises(SystemExit):
        build_parser().parse_args([cmd[0], "--help"])
    help_text = capsys.readouterr().out
    assert "--no-progress-bar" in help_text and "--no-progress " not in help_text and "--no-progress]" not in help_text


def test_path_is_a_hidden_alias_of_mt_checkpoint(capsys):
    assert parse("translate-test", "--task", "T", "--out", "O", "--path", "ck.pt").mt_checkpoint == "ck.pt"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["translate-test", "--help"])
    assert "--path" not in capsys.readouterr().out


def _captured(monkeypatch, module, name):
    got = []
    monkeypatch.setattr(module, name, got.append)
    return got


def test_build_classification_defaults_per_source(monkeypatch):
    gettext = _captured(monkeypatch, eval.gettext_domains, "build_gettext_task")
    chatterbot = _captured(monkeypatch, eval.chatterbot, "build_chatterbot_task")
    assert main(["build-classification", "--out", "O"]) == 0
    assert gettext == [GettextTaskConfig(out="O")]
    assert main(["build-classification", "--out", "O", "--source", "chatterbot", "--seed", "3", "--no-progress"]) == 0
    assert chatterbot == [ChatterbotTaskConfig(out="O", seed=3)]
    main(["build-classification", "--out", "O", "--langs", "deu_Latn", "--min-per-label", "2", "--no-progress-bar"])
    assert gettext[-1] == GettextTaskConfig(out="O", langs="deu_Latn", min_per_label=2, progress=False)
    main(["build-classification", "--source", "chatterbot", "--out", "O", "--chatterbot-dir", "D"])
    assert chatterbot[-1] == ChatterbotTaskConfig(out="O", chatterbot_dir="D")
