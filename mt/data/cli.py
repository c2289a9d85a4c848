"""Console entry points of ``mt/data``: ``mt-data``, ``mt-spm``, ``mt-preprocess`` .

Each command's flags are generated from its config dataclass (``GettextConfig``, ``SpmTrainConfig``,
``PreprocessConfig``, ...); ``mt-data`` dispatches its sub-commands to the parsers below.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from mt.common.errors import UserError, cli_entry
from mt.common.flags import ProgressOptions, add_flags, arg, from_args
from mt.data.gettext_corpus import GettextConfig, build_gettext_corpus
from mt.data.preprocess import PreprocessConfig, preprocess
from mt.data.spm import SpmDecodeConfig, SpmEncodeConfig, SpmTrainConfig, decode_stream, encode_stream, train

_FMT = argparse.RawDescriptionHelpFormatter


# --- mt-data build gettext -------------------------------------------------------------------------------
_GETTEXT_EPILOG = """examples:
  mt-data build gettext --out work/demo/corpus --langs demo
  mt-data build gettext --out work/all/corpus                     # every language with >= 100 pairs
  mt-data build gettext --out work/c --langs deu_Latn,fra_Latn,xho_Latn --dev-size 300
  mt-data build gettext --out work/c --exclude my_test.en my_test.de   # keep my test set out of train
  mt-data locales                                                 # which locale maps to which code

Output (FLORES-200 layout, see mt/data/layout.py): train/eng_Latn-{lang}.{eng_Latn,lang},
dev/{lang}.dev, devtest/{lang}.devtest (N-way, line-aligned), mono/eng_Latn-{lang}.{eng_Latn,lang,gold.tsv},
stats.tsv, build.json. A second run with the same inputs and options prints "up to date".
"""


def _gettext_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-data build gettext",
        description="Build the embedded corpus from the gettext catalogues (.mo) of this machine: "
        "English-X bitext, N-way dev/devtest, hidden-parallel mono sets for mining.",
        epilog=_GETTEXT_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, GettextConfig)
    add_flags(p, ProgressOptions)
    return p


def _build_main(argv: list[str]) -> int:
    """``mt-data build gettext [options]`` (argv after ``build``)."""
    if not argv or argv[0] in ("-h", "--help"):
        _gettext_parser().print_help()
        return 0 if argv else 2
    if argv[0] != "gettext":
        raise UserError(
            f"mt-data build {argv[0]}: unknown corpus; the embedded one is `gettext` "
            f"(others are fetched with `mt-data fetch`)"
        )
    args = _gettext_parser().parse_args(argv[1:])
    build_gettext_corpus(from_args(GettextConfig, args, progress=not args.no_progress_bar))
    return 0


# --- mt-data list / fetch / verify / register --------------------------------------------------------------
_MANIFESTS_EPILOG = """examples:
  mt-data list
  mt-data fetch flores200                      # to $NLLB_MINI_HOME/data/flores200 (default ~/.cache/nllb-mini)
  mt-data fetch flores200 --dest /data/flores  # somewhere else; resume by running it again
  mt-data register flores200 ~/Downloads/flores200_dataset.tar.gz   # offline: use a copy you have
  mt-data register flores200 /data/flores200_dataset                # ... or an unpacked folder
  mt-data register gettext work/demo/corpus    # after `mt-data build gettext --out work/demo/corpus`
  mt-data register user-tsv my_bitext.tsv      # your own src<TAB>tgt file
  mt-data verify flores200                     # the registered/fetched copy
  mt-data verify flores200 flores200_dataset.tar.gz

Python: `from mt.data.manifests import resolve; resolve("flores200") / "devtest" / "eng_Latn.devtest"`.
"""


@dataclass
class FetchConfig:
    id: str = arg(help="", positional=True, required=True)
    dest: str | None = arg(None, "folder for the download and its unpacked files (default: $NLLB_MINI_HOME/data/ID)")
    timeout: float = arg(10.0, "seconds to wait for the server (default 10)", show_default=False)
    retries: int = arg(3, "resumes after a lost connection (default 3)", show_default=False)


@dataclass
class VerifyConfig:
    id: str = arg(help="", positional=True, required=True)
    path: str | None = arg(None, "archive, folder or file (default: the registered or fetched copy)", positional=True)


@dataclass
class RegisterConfig:
    id: str = arg(help="", positional=True, required=True)
    path: str = arg(help="", positional=True, required=True)


def _manifest_parser(cmd: str, cls: type | None, progress: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"mt-data {cmd}", epilog=None if cls is None else _MANIFESTS_EPILOG, formatter_class=_FMT
    )
    if cls is not None:
        add_flags(p, cls)
    if progress:
        add_flags(p, ProgressOptions)
    return p


def _list_main(argv: list[str]) -> int:
    from mt.data.manifests import print_list

    _manifest_parser("list", None, progress=False).parse_args(argv)
    print_list(sys.stdout)
    return 0


def _fetch_main(argv: list[str]) -> int:
    from mt.data.manifests import fetch, registry_path

    args = _manifest_parser("fetch", FetchConfig, progress=True).parse_args(argv)
    cfg = from_args(FetchConfig, args)
    data = fetch(cfg.id, cfg.dest, timeout=cfg.timeout, retries=cfg.retries, progress=not args.no_progress_bar)
    print(f"{cfg.id}: ready at {data} (registered in {registry_path()})")
    return 0


def _verify_main(argv: list[str]) -> int:
    from mt.data.manifests import verify

    cfg = from_args(VerifyConfig, _manifest_parser("verify", VerifyConfig, progress=False).parse_args(argv))
    print(verify(cfg.id, cfg.path))
    return 0


def _register_main(argv: list[str]) -> int:
    from mt.data.manifests import register, registry_path

    args = _manifest_parser("register", RegisterConfig, progress=True).parse_args(argv)
    cfg = from_args(RegisterConfig, args)
    data = register(cfg.id, cfg.path, progress=not args.no_progress_bar)
    print(f"{cfg.id}: registered {data} in {registry_path()}")
    return 0


def _merge_main(argv: list[str]) -> int:
    from mt.data.merge import MergeConfig, merge_bitext

    p = argparse.ArgumentParser(
        prog="mt-data merge-bitext",
        description="Merge bitexts of one pair (seed + mined) into the training text: duplicate pairs and\n"
        "pairs with a dev/devtest sentence removed, the counts per reason reported.",
        formatter_class=_FMT,
        epilog="example:\n  mt-data merge-bitext -s eng_Latn -t deu_Latn --inputs corpus/train/eng_Latn-deu_Latn,"
        "mined/deu_Latn/mined \\\n    --eval-dirs corpus/dev,corpus/devtest --out bitext/train/eng_Latn-deu_Latn",
    )
    add_flags(p, MergeConfig)
    cfg = from_args(MergeConfig, p.parse_args(argv))
    print(merge_bitext(cfg).summary(cfg.out), file=sys.stderr)
    return 0


# --- mt-data locales -------------------------------------------------------------------------------------
@dataclass
class LocalesConfig:
    locale_dir: str = arg("/usr/share/locale", positional=True, show_default=False)


def _locales_main(argv: list[str]) -> int:
    from mt.data.locales import print_locale_table

    p = argparse.ArgumentParser(
        prog="mt-data locales",
        description="Print how each gettext locale folder maps to a FLORES-200 code.",
    )
    add_flags(p, LocalesConfig)
    print_locale_table(from_args(LocalesConfig, p.parse_args(argv)).locale_dir)
    return 0


# --- mt-data ------------------------------------------------------------------------------------------------
# sub-command -> (its main(argv after the command), one-line summary)
_DATA_COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "build": (_build_main, "build the embedded gettext corpus (train bitext, N-way dev/devtest)"),
    "list": (_list_main, "list the corpora described in data_manifests/"),
    "fetch": (_fetch_main, "download a corpus with resume, progress and checksum"),
    "verify": (_verify_main, "check a local copy of a corpus against its manifest"),
    "register": (_register_main, "point a manifest ID at a local copy (offline use)"),
    "locales": (_locales_main, "how each gettext locale folder maps to a FLORES-200 code"),
    "merge-bitext": (_merge_main, "seed + mined bitext of a pair: duplicates and dev/devtest sentences removed"),
}

_DATA_HELP = """usage: mt-data COMMAND [options]

Build and fetch corpora described in data_manifests/.

commands:
{commands}

examples:
  mt-data build gettext --out work/demo/corpus
  mt-data list
  mt-data fetch flores200
  mt-data register flores200 ~/Downloads/flores200_dataset.tar.gz
  mt-data verify flores200
  mt-data merge-bitext -s eng_Latn -t deu_Latn --inputs corpus/train/eng_Latn-deu_Latn,mined/deu_Latn/mined \\
    --eval-dirs corpus/dev,corpus/devtest --out bitext/train/eng_Latn-deu_Latn

Run `mt-data COMMAND --help` for the options of one command.
"""


@cli_entry
def data_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        commands = "\n".join(f"  {name:<13} {summary}" for name, (_, summary) in _DATA_COMMANDS.items())
        print(_DATA_HELP.format(commands=commands))
        return 0 if argv else 2
    cmd = argv[0]
    if cmd not in _DATA_COMMANDS:
        raise UserError(f"mt-data: unknown command {cmd!r}; choose from {', '.join(_DATA_COMMANDS)}")
    return _DATA_COMMANDS[cmd][0](argv[1:])


# --- mt-spm -------------------------------------------------------------------------------------------------
_SPM_EPILOG = """examples:
  # a joint 8k unigram model over every language of a corpus, NLLB's temperature T=5
  mt-spm train --corpus work/demo/corpus --vocab-size 8000 --out work/demo/spm
  # cap the high-resource languages, reserve tokens for languages added later
  mt-spm train --corpus corpus --vocab-size 16000 --sentences-per-lang-cap 200000 --langs zul_Latn xho_Latn --out spm
  # plain text files too (a .xxx_Yyyy suffix names the language)
  mt-spm train --input mono.swh_Latn extra.txt --vocab-size 4000 --out spm
  mt-spm encode --model spm/spm.model < corpus/devtest/deu_Latn.devtest > devtest.spm.deu_Latn
  mt-spm encode --model spm/spm.model --output-format id < in.txt > in.ids
  mt-spm decode --model spm/spm.model < hyp.spm > hyp.txt

Outputs of train: spm.model, spm.vocab, dict.txt (fairseq `token count` lines, pieces in SentencePiece id
order, then __xxx_Yyyy__ language tokens) and spm.config.json (options, per-language sample counts).
"""


def build_spm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-spm",
        description="Train and apply a joint multilingual SentencePiece model (+ fairseq dict.txt).",
        epilog=_SPM_EPILOG,
        formatter_class=_FMT,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    kw = {"epilog": _SPM_EPILOG, "formatter_class": _FMT}
    t = sub.add_parser("train", help="train a joint SentencePiece model with temperature sampling", **kw)
    add_flags(t, SpmTrainConfig)
    add_flags(t, ProgressOptions)
    add_flags(sub.add_parser("encode", help="text lines (stdin) -> pieces or ids (stdout)", **kw), SpmEncodeConfig)
    add_flags(sub.add_parser("decode", help="pieces or ids (stdin) -> text (stdout)", **kw), SpmDecodeConfig)
    return p


@cli_entry
def spm_main(argv: list[str] | None = None) -> int:
    args = build_spm_parser().parse_args(argv)
    if args.cmd == "train":
        train(from_args(SpmTrainConfig, args), progress=not args.no_progress_bar)
    elif args.cmd == "encode":
        encode_stream(from_args(SpmEncodeConfig, args), sys.stdin, sys.stdout)
    else:
        decode_stream(from_args(SpmDecodeConfig, args), sys.stdin, sys.stdout)
    return 0


# --- mt-preprocess ------------------------------------------------------------------------------------------
_PREPROCESS_EPILOG = """examples:
  # raw text + SentencePiece applied here, the dictionary from mt-spm train (found beside spm.model)
  mt-preprocess --source-lang eng_Latn --target-lang deu_Latn \\
      --trainpref corpus/train/eng_Latn-deu_Latn --validpref corpus/dev --testpref corpus/devtest \\
      --spm-model spm/spm.model --srcdict spm/dict.txt --joined-dictionary --destdir data-bin --workers 2

  # multilingual: one run per pair into the same destdir with the same joined dictionary
  for l in deu_Latn fra_Latn zul_Latn; do
    mt-preprocess --source-lang eng_Latn --target-lang $l --trainpref corpus/train/eng_Latn-$l \\
        --validpref corpus/dev --spm-model spm/spm.model --srcdict spm/dict.txt --joined-dictionary \\
        --destdir data-bin
  done

  # already SentencePiece-encoded (space-separated pieces), exactly like fairseq-preprocess
  mt-preprocess --source-lang eng_Latn --target-lang deu_Latn --trainpref spm/train --validpref spm/valid \\
      --srcdict spm/dict.txt --joined-dictionary --destdir data-bin

A prefix P means P.{src} and P.{tgt}; when P is a folder in FLORES layout (corpus/dev, flores200_dataset/
devtest) it means P/{lang}.{basename of P}. Comma-separated --validpref/--testpref give valid, valid1 ...
Outputs: {destdir}/{split}.{src}-{tgt}.{lang}.bin/.idx, dict.{src}.txt, dict.{tgt}.txt (+ dict.txt if joined).
"""


def build_preprocess_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-preprocess",
        description="Binarize bitext for training (fairseq-preprocess compatible).",
        epilog=_PREPROCESS_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, PreprocessConfig)
    return p


@cli_entry
def preprocess_main(argv: list[str] | None = None) -> int:
    parser = build_preprocess_parser()
    cfg = from_args(PreprocessConfig, parser.parse_args(argv))
    if cfg.workers < 1:
        parser.error("--workers must be >= 1")
    preprocess(cfg)
    return 0
