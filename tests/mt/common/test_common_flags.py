"""mt.common.flags: a config dataclass is the one place an option is declared."""

import argparse
from dataclasses import dataclass

import pytest

from mt.common.flags import ProgressOptions, add_flags, arg, comma_list, from_args


@dataclass
class Cfg:
    data: str = arg(help="data folder", positional=True)
    threads: int = arg(2, "CPU threads", aliases=("--num-threads",))
    lang_pairs: list[str] = arg(["eng_Latn-deu_Latn"], "directions", group="data")
    src_lang: str = arg("", "source language")
    tgt_lang: str = arg("", "target language")
    quiet: bool = arg(False, "print less")
    progress: bool = arg(True, "progress bars")
    beam: int = arg(4, "beam size", choices=(1, 2, 4))
    not_a_flag: int = 7


def _parse(argv, **kw):
    p = argparse.ArgumentParser()
    add_flags(p, Cfg, **kw)
    return p, p.parse_args(argv)


def test_fields_become_flags_and_come_back_by_keyword():
    _, ns = _parse(["d", "--threads", "1", "--lang-pairs", "a-b, c-d", "--src-lang", "x", "--tgt-lang", "y"])
    cfg = from_args(Cfg, ns, not_a_flag=3)
    assert cfg == Cfg("d", 1, ["a-b", "c-d"], "x", "y", False, True, 4, 3)


def test_defaults_types_and_booleans():
    _, ns = _parse(["d", "--quiet", "--no-progress"])
    cfg = from_args(Cfg, ns)
    assert (cfg.threads, cfg.lang_pairs, cfg.quiet, cfg.progress, cfg.not_a_flag) == (
        2,
        ["eng_Latn-deu_Latn"],
        True,
        False,
        7,
    )
    assert Cfg("d").lang_pairs is not Cfg("d").lang_pairs  # a fresh list per config


def test_old_spelling_is_accepted_and_hidden():
    p, ns = _parse(["d", "--num-threads", "5"])
    assert ns.threads == 5
    assert "--num-threads" not in p.format_help() and "--threads" in p.format_help()


def test_help_shows_defaults_and_groups():
    p, _ = _parse(["d"])
    text = p.format_help()
    assert "CPU threads (default: 2)" in text and "directions (default: eng_Latn-deu_Latn)" in text
    assert "\ndata:\n" in text  # the group


def test_choices_only_exclude_and_command_defaults():
    with pytest.raises(SystemExit):
        _parse(["d", "--beam", "3"])
    p, ns = _parse(["d"], only=["data", "threads"], defaults={"threads": 9})
    assert ns.threads == 9 and not hasattr(ns, "beam")
    assert "(default: 9)" in p.format_help()


def test_comma_list():
    assert comma_list(" a, ,b ,") == ["a", "b"]


@dataclass
class Mode:
    lang: str | None = arg(None, "keep this language", exclusive="mode", required=True)
    annotate: bool = arg(False, "annotate every line", exclusive="mode", required=True)
    gpu: bool = arg(False, "use GPUs", exclusive="device")
    cpu: bool = arg(False, "stay on CPU", exclusive="device")


def test_exclusive_fields_form_one_group_required_when_a_member_is():
    p = argparse.ArgumentParser()
    add_flags(p, Mode)
    assert from_args(Mode, p.parse_args(["--lang", "x"])) == Mode("x")
    assert from_args(Mode, p.parse_args(["--annotate", "--cpu"])) == Mode(None, True, False, True)
    for bad in ([], ["--lang", "x", "--annotate"], ["--annotate", "--gpu", "--cpu"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    assert "(--lang LANG | --annotate)" in p.format_usage()


def test_a_zero_default_is_shown_unlike_false_and_none():
    @dataclass
    class Z:
        workers: int = arg(0, "worker processes")
        quiet: bool = arg(False, "print less")
        out: str | None = arg(None, "output")

    p = argparse.ArgumentParser()
    add_flags(p, Z)
    text = p.format_help()
    assert "worker processes (default: 0)" in text and "(default: False)" not in text and "(default: None)" not in text


@dataclass
class Other:
    workers: int = arg(1, "worker processes", group="data")
    verbose: bool = arg(False, "say more")


def test_configs_share_a_group_and_group_override():
    p = argparse.ArgumentParser()
    add_flags(p, Cfg, only=["data", "lang_pairs"])
    add_flags(p, Other)
    text = p.format_help()
    assert text.count("\ndata:\n") == 1
    assert "--lang-pairs" in text.split("\ndata:\n")[1] and "--workers" in text.split("\ndata:\n")[1]
    p = argparse.ArgumentParser()
    add_flags(p, Cfg, only=["data", "threads", "lang_pairs"], group="as mt-train")
    text = p.format_help()
    assert "\nas mt-train:\n" in text and "\ndata:\n" not in text
    group_text = text.split("\nas mt-train:\n")[1]
    assert "--threads" in group_text and "--lang-pairs" in group_text


@dataclass
class Named:
    src_lang: str = arg("", "source language", name="--source-lang", short="-s", aliases=("--src",))


def test_a_field_may_have_another_flag_name():
    p = argparse.ArgumentParser()
    add_flags(p, Named)
    assert from_args(Named, p.parse_args(["-s", "a"])) == Named("a")
    assert from_args(Named, p.parse_args(["--source-lang", "b"])).src_lang == "b"
    assert from_args(Named, p.parse_args(["--src", "c"])).src_lang == "c"
    assert "--src-lang" not in p.format_help() and "-s SOURCE_LANG" in p.format_help()


@dataclass
class Optional_:
    remove_bpe: str | None = arg(None, "post-process", nargs="?", const="sentencepiece")


def test_optional_value_with_const():
    p = argparse.ArgumentParser()
    add_flags(p, Optional_)
    assert p.parse_args([]).remove_bpe is None
    assert p.parse_args(["--remove-bpe"]).remove_bpe == "sentencepiece"
    assert p.parse_args(["--remove-bpe", "x"]).remove_bpe == "x"


@pytest.mark.parametrize("spelling", ["--no-progress-bar", "--no-progress"])
def test_progress_switch_and_its_old_spelling(spelling):
    p = argparse.ArgumentParser()
    add_flags(p, ProgressOptions)
    assert from_args(ProgressOptions, p.parse_args([spelling])).no_progress_bar
    assert not from_args(ProgressOptions, p.parse_args([])).no_progress_bar
