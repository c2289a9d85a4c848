"""Render every console script's ``--help`` (and each sub-command's) into ``docs/cli.md``, and the short
command table between ``<!-- cli-table:start -->`` and ``<!-- cli-table:end -->`` in ``README.md``.

    python recipes/gen_cli_reference.py            # rewrite docs/cli.md and the README table
    python recipes/gen_cli_reference.py --check    # exit 1 if either is out of date (nothing written)

Why in-process with a patched ``argparse``: the entry points build their parsers in different places
(``build_parser()``, a module's ``cli(argv)``, lazily imported stages), but all of them end in
``parse_known_args``. Catching the parser there gives the real object, so sub-commands are found from
the parser itself instead of scraping help text. The scripts are read from ``pyproject.toml``; help is
formatted at a fixed width (``COLUMNS=100``) so the output does not depend on the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- cli-table:start -->", "<!-- cli-table:end -->"


class _Caught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def scripts(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Console script name -> ``module:function``, in pyproject order."""
    with open(pyproject, "rb") as fh:
        return dict(tomllib.load(fh)["project"]["scripts"])


def capture_parser(name: str, target: str, args: tuple[str, ...] = ()) -> tuple[argparse.ArgumentParser | None, str]:
    """The ``ArgumentParser`` the entry point builds for ``args --help``, caught when it starts parsing;
    else (None, what it printed) for hand-written dispatchers such as ``mt-data``."""
    module, func = target.split(":")
    original = argparse.ArgumentParser.parse_known_args

    def catch(self, args=None, namespace=None):
        raise _Caught(self)

    argparse.ArgumentParser.parse_known_args = catch  # type: ignore[method-assign]
    old_argv = sys.argv
    sys.argv = [name, *args, "--help"]
    printed = io.StringIO()
    try:
        entry = getattr(importlib.import_module(module), func)
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            entry([*args, "--help"])
    except _Caught as caught:
        if caught.parser.prog in ("", "__main__.py", "-c") or not args:
            caught.parser.prog = (
                " ".join([name, *args]) if caught.parser.prog in ("", "__main__.py", "-c") else caught.parser.prog
            )
        return caught.parser, ""
    except (SystemExit, ImportError):  # SystemExit: a UserError; ImportError: declared, not built here
        pass
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
        sys.argv = old_argv
    return None, printed.getvalue()


def listed_commands(text: str) -> list[str]:
    """Command names of a hand-written help text: the indented first words of its ``commands:`` block."""
    names, inside = [], False
    for line in text.splitlines():
        if line.strip().lower() == "commands:":
            inside = True
        elif inside and line.startswith("  ") and line.strip():
            names.append(line.split()[0])
        elif inside:
            break
    return names


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def summary(parser: argparse.ArgumentParser) -> str:
    """First sentence of the description (else the usage line)."""
    text = " ".join((parser.description or "").split())
    if not text:
        return ""
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 110 else first[:107].rsplit(" ", 1)[0] + "..."


def _anchor(name: str) -> str:
    return name.replace(" ", "-").lower()


def render() -> tuple[str, str]:
    """(docs/cli.md text, README table text)."""
    os.environ["COLUMNS"] = "100"
    toc, body, table = [], [], ["| command | what it does |", "|---|---|"]
    for name, target in scripts().items():
        parser, printed = capture_parser(name, target)
        if parser is not None:
            subs = subcommands(parser)
            text, what = parser.format_help(), summary(parser)
        elif printed.strip():  # a hand-written dispatcher: its text, then each listed command's parser
            subs = {}
            for cmd in listed_commands(printed):
                sub, sub_text = capture_parser(name, target, (cmd,))
                if sub is not None and cmd in subcommands(sub):  # the module parses "CMD ..." itself
                    sub = subcommands(sub)[cmd]
                if sub is not None or sub_text.strip():
                    subs[cmd] = sub if sub is not None else sub_text
            text = printed
            what = next((ln for ln in printed.splitlines()[1:] if ln.strip()), "").strip().rstrip(".")
        else:
            body += [f"## {name}", "", "*Declared in pyproject.toml but not available in this checkout.*", ""]
            table.append(f"| `{name}` | (not available in this checkout) |")
            continue
        table.append(
            f"| [`{name}`](docs/cli.md#{_anchor(name)}) | {what}" + (f" ({', '.join(subs)})" if subs else "") + " |"
        )
        toc.append(
            f"- [`{name}`](#{_anchor(name)})"
            + (": " + ", ".join(f"[`{s}`](#{_anchor(name + ' ' + s)})" for s in subs) if subs else "")
        )
        body += [f"## {name}", "", "```text", text.rstrip(), "```", ""]
        for sub_name, sub in subs.items():
            sub_help = sub if isinstance(sub, str) else sub.format_help()
            body += [f"### {name} {sub_name}", "", "```text", sub_help.rstrip(), "```", ""]
            for sub2_name, sub2 in ({} if isinstance(sub, str) else subcommands(sub)).items():
                body += [f"#### {name} {sub_name} {sub2_name}", "", "```text", sub2.format_help().rstrip(), "```", ""]
    doc = (
        "\n".join(
            [
                "# Command-line reference",
                "",
                "Generated by `python recipes/gen_cli_reference.py` from each command's `--help`; do not edit by hand.",
                "",
                *toc,
                "",
                *body,
            ]
        ).rstrip()
        + "\n"
    )
    return doc, "\n".join(table)


def _readme_with(table: str, readme: str) -> str:
    if START not in readme or END not in readme:
        return readme
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write docs/cli.md and the README command table from --help.")
    p.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md or the README table is stale")
    p.add_argument("--out", default=str(ROOT / "docs" / "cli.md"))
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    a = p.parse_args(argv)
    doc, table = render()
    out, readme = Path(a.out), Path(a.readme)
    old_readme = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    new_readme = _readme_with(table, old_readme)
    stale = [
        str(path)
        for path, new, old in (
            (out, doc, out.read_text(encoding="utf-8") if out.is_file() else ""),
            (readme, new_readme, old_readme),
        )
        if new != old
    ]
    if a.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run python recipes/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    if new_readme != old_readme:
        readme.write_text(new_readme, encoding="utf-8")
    print(
        f"wrote {out} ({doc.count(chr(10))} lines)"
        + (f" and the command table in {readme}" if new_readme != old_readme else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
