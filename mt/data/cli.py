"""Console entry points of ``mt/data``: ``mt-data``, ``mt-spm``, ``mt-preprocess``.

``mt-data`` dispatches each sub-command to the module that owns it, so each keeps its own argparse.
"""

from __future__ import annotations

import importlib
import sys

from mt.common.errors import UserError, cli_entry

# sub-command -> (module with ``cli(argv) -> int``, one-line summary)
_DATA_COMMANDS = {
    "build": ("mt.data.gettext_corpus", "build the embedded gettext corpus (train bitext, N-way dev/devtest)"),
    "list": ("mt.data.manifests", "list the corpora described in data_manifests/"),
    "fetch": ("mt.data.manifests", "download a corpus with resume, progress and checksum"),
    "verify": ("mt.data.manifests", "check a local copy of a corpus against its manifest"),
    "register": ("mt.data.manifests", "point a manifest ID at a local copy (offline use)"),
    "merge-bitext": ("mt.data.merge", "seed + mined bitext of a pair: duplicates and dev/devtest sentences removed"),
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
    module = importlib.import_module(_DATA_COMMANDS[cmd][0])
    return module.cli([cmd, *argv[1:]])


@cli_entry
def spm_main(argv: list[str] | None = None) -> int:
    from mt.data import spm

    return spm.cli(argv)


@cli_entry
def preprocess_main(argv: list[str] | None = None) -> int:
    from mt.data import preprocess

    return preprocess.cli(argv)
