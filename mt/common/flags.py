"""Command-line flags generated from config dataclasses: each option is written once, as a field.

A field becomes a flag when it is declared with ``arg(default, help, ...)``: its name gives the flag
(``max_tokens`` -> ``--max-tokens``), its default and type give argparse's, and ``from_args`` builds the
config back from the parsed namespace by keyword, so a flag and its field cannot drift apart or swap.
Old spellings stay accepted as hidden aliases (``aliases=("--num-threads",)``). The idea is fairseq's
``gen_parser_from_dataclass``, without its registry.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")

_FLAG = "flag"


@dataclass(frozen=True)
class Flag:
    """How a field appears on the command line (stored in the field's metadata)."""

    help: str
    aliases: tuple[str, ...] = ()  # old spellings: accepted, not shown in --help
    name: str = ""  # the flag's spelling when it is not the field's (fairseq's --source-lang for src_lang)
    short: str = ""  # e.g. "-o"
    positional: bool = False
    type: Callable[[str], Any] | None = None  # parses one command-line string; default: the field's type
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    nargs: str | int | None = None
    const: Any = None  # with nargs="?": the value of the bare flag
    group: str = ""  # argparse group title ("" = the parser's own options)
    exclusive: str = ""  # fields naming the same one are mutually exclusive (one required if any is required)
    show_default: bool = True
    required: bool = False


def arg(default: Any = dataclasses.MISSING, help: str = "", **flag: Any) -> Any:
    """A dataclass field that is also a command-line flag. Lists and dicts get a copy of ``default`` each time."""
    meta = {_FLAG: Flag(help, **flag)}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def comma_list(text: str) -> list[str]:
    """``a,b, c`` -> ``["a", "b", "c"]`` (empty items dropped): the toolkit's way of passing lists."""
    return [x.strip() for x in text.split(",") if x.strip()]


def flag_fields(cls: type) -> list[tuple[dataclasses.Field, Flag]]:
    return [(f, f.metadata[_FLAG]) for f in dataclasses.fields(cls) if _FLAG in f.metadata]


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _base_type(cls: type, f: dataclasses.Field) -> Any:
    hint = typing.get_type_hints(cls).get(f.name, str)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else str
    return hint


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
    group: str | None = None,
) -> None:
    """Add a flag for each ``arg`` field of ``cls`` (``only`` / ``exclude`` by field name), grouped by
    ``Flag.group`` or, when given, all in ``group``; ``defaults`` overrides a field's default for this command
    (the help shows the new one). A group the parser already has is reused, so several configs can share one."""
    exclusive: dict[tuple[int, str], Any] = {}
    for f, flag in flag_fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        target = _group(parser, flag.group if group is None else group)
        if flag.exclusive:
            key = (id(target), flag.exclusive)
            if key not in exclusive:
                required = any(o.required for _, o in flag_fields(cls) if o.exclusive == flag.exclusive)
                exclusive[key] = target.add_mutually_exclusive_group(required=required)
            target = exclusive[key]
        default = (defaults or {}).get(f.name, _default(f))
        kw = _argparse_kwargs(cls, f, flag, default)
        if flag.positional:
            target.add_argument(f.name, **kw)
            continue
        names = [n for n in (flag.short, flag.name or option_name(f.name)) if n]
        target.add_argument(*names, dest=f.name, **kw)
        for alias in flag.aliases:
            hidden = {k: v for k, v in kw.items() if k not in ("help", "required")}
            target.add_argument(alias, dest=f.name, help=argparse.SUPPRESS, **hidden)


def _group(parser: argparse.ArgumentParser, title: str) -> Any:
    """The parser itself for "", else its argument group of that title (created on first use)."""
    if not title:
        return parser
    for existing in parser._action_groups:
        if existing.title == title:
            return existing
    return parser.add_argument_group(title)


def _argparse_kwargs(cls: type, f: dataclasses.Field, flag: Flag, default: Any) -> dict[str, Any]:
    base = _base_type(cls, f)
    help_text = flag.help
    kw: dict[str, Any] = {"default": default}
    if base is bool and not flag.positional:
        kw["action"] = "store_true" if not default else argparse.BooleanOptionalAction
    else:
        parse = flag.type
        if parse is None:
            parse = comma_list if typing.get_origin(base) is list else (base if base in (int, float) else str)
        kw["type"] = parse
        for key in ("choices", "metavar", "nargs", "const"):
            if getattr(flag, key) is not None:
                kw[key] = getattr(flag, key)
        if flag.name and "metavar" not in kw and "choices" not in kw:  # argparse would name it after the field
            kw["metavar"] = flag.name.lstrip("-").replace("-", "_").upper()
        if flag.positional:
            if flag.nargs is None and not flag.required and f.default is not dataclasses.MISSING:
                kw["nargs"] = "?"
        elif flag.required and not flag.exclusive:  # an exclusive one: its group is required
            kw["required"] = True
    shown_default = not (default is None or default is False or default in ("", [], {}))  # 0 is shown: 0 == False
    if flag.show_default and shown_default and "%(default)" not in help_text:
        shown = ",".join(map(str, default)) if isinstance(default, list) else "%(default)s"
        help_text = f"{help_text} (default: {shown})" if help_text else f"(default: {shown})"
    kw["help"] = help_text
    return kw


def from_args(cls: type[T], ns: argparse.Namespace, **values: Any) -> T:
    """``cls`` built by keyword from the namespace's flag fields, plus ``values`` (fields that are no flags)."""
    given = {f.name: getattr(ns, f.name) for f, _ in flag_fields(cls) if hasattr(ns, f.name)}
    return cls(**{**given, **values})


@dataclass
class ProgressOptions:
    """The progress-bar switch of long-running commands, spelled as fairseq does (``--no-progress`` is the old
    spelling of some commands)."""

    no_progress_bar: bool = arg(False, "plain log lines instead of a progress bar", aliases=("--no-progress",))
