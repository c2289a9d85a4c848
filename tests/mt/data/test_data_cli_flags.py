"""mt-data / mt-spm / mt-preprocess flags come from their configs; old spellings stay accepted, hidden."""

import re

import pytest

from mt.common.flags import from_args
from mt.data import cli
from mt.data.gettext_corpus import GettextConfig
from mt.data.preprocess import PreprocessConfig
from mt.data.spm import SpmTrainConfig


def _spm_train(*argv):
    return cli.build_spm_parser().parse_args(["train", "--vocab-size", "100", "--out", "o", *argv])


def test_spm_train_config_by_keyword():
    args = _spm_train("--input", "a.txt", "b.txt", "--langs", "xho_Latn", "--threads", "2", "--seed", "3")
    cfg = from_args(SpmTrainConfig, args)
    assert cfg == SpmTrainConfig(
        out="o", inputs=["a.txt", "b.txt"], langs=["xho_Latn"], vocab_size=100, seed=3, num_threads=2
    )


@pytest.mark.parametrize(
    ("parse", "old", "new"),
    [
        (_spm_train, ["--num-threads", "4"], ["--threads", "4"]),
        (_spm_train, ["--no-progress"], ["--no-progress-bar"]),
        (lambda *a: cli._gettext_parser().parse_args(["--out", "c", *a]), ["--no-progress"], ["--no-progress-bar"]),
        (
            lambda *a: cli._manifest_parser("fetch", cli.FetchConfig, True).parse_args(["x", *a]),
            ["--no-progress"],
            ["--no-progress-bar"],
        ),
        (
            lambda *a: cli._manifest_parser("register", cli.RegisterConfig, True).parse_args(["x", "p", *a]),
            ["--no-progress"],
            ["--no-progress-bar"],
        ),
    ],
)
def test_old_spellings_still_work(parse, old, new):
    assert vars(parse(*old)) == vars(parse(*new)) != vars(parse())


def test_old_spellings_are_hidden():
    sub = cli.build_spm_parser()._subparsers._group_actions[0].choices["train"]
    text = sub.format_help()
    assert "--threads" in text and "--num-threads" not in text
    assert not re.search(r"--no-progress(?![-\w])", text) and not re.search(
        r"--no-progress(?![-\w])", cli._gettext_parser().format_help()
    )


def test_gettext_and_preprocess_configs():
    args = cli._gettext_parser().parse_args(
        ["--out", "c", "--langs", "demo", "--exclude", "a", "b", "--no-progress-bar"]
    )
    cfg = from_args(GettextConfig, args, progress=not args.no_progress_bar)
    assert cfg == GettextConfig(out="c", langs="demo", exclude=["a", "b"], progress=False)
    args = cli.build_preprocess_parser().parse_args(
        ["-s", "eng_Latn", "-t", "deu_Latn", "--trainpref", "t", "--joined-dictionary", "--dataset-impl", "mmap"]
    )
    cfg = from_args(PreprocessConfig, args)
    assert cfg == PreprocessConfig(
        source_lang="eng_Latn", target_lang="deu_Latn", trainpref="t", joined_dictionary=True
    )
