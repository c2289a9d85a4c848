"""Corpus manifests (``data_manifests/*.toml``) and the registry of local copies: parse and validate a
manifest, list them, and ``resolve(ID)`` to the directory (or file) of a corpus.

A manifest says what a corpus is (id, kind, languages, licence, citation), where it comes from (a URL
with sha256/size, or local files) and what its files look like once unpacked (``[layout]``). Other rooms
never hard-code paths: they call ``resolve(ID)`` and get the directory (or file) with that layout, from
a copy the user registered (offline machines) or one ``mt-data fetch`` downloaded
(:mod:`mt.data.manifest_download` gets, checks and unpacks copies; :mod:`mt.data.manifests` is the CLI).

Where things live (``$NLLB_MINI_HOME``, default ``~/.cache/nllb-mini``)::

    registry.toml          ID -> local copy, written by `mt-data register` and `mt-data fetch` (under
                           registry.toml.lock, so parallel runs each keep their entry)
    data/{ID}/             default download + unpack folder of `mt-data fetch ID`; `.lock` (one fetch at a
                           time), `.{archive}.unpacked` (sha256 of the unpacked archive + what it placed)
    manifests/*.toml       your own manifests (searched before the ones shipped in data_manifests/)

Manifests may come from strangers, so nothing in them is trusted as a path: ids are slugs, ``[source]
filename`` a plain name, ``[layout]`` paths relative without ``..``. Every value has its type checked, with
a one-line error naming the line.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from mt.common.errors import UserError, located
from mt.common.files import atomic_write, exclusive_lock
from mt.common.langs import check_code
from mt.common.textio import count_lines

KINDS = ("parallel", "monolingual", "eval-nway")
ARCHIVE_FORMATS = ("tar.gz", "tgz", "tar", "zip")
_REPO_MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"


# --------------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------------
@dataclass
class Source:
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    archive_format: str | None = None  # tar.gz | tgz | tar | zip; None: keep the file as downloaded
    filename: str | None = None  # name of the downloaded file (default: last part of the URL)
    local_glob: str | None = None  # corpus built from local files (e.g. gettext .mo catalogues)
    local_path: str | None = None  # a user's own file: must be registered
    build: str | None = None  # the command that builds a local corpus

    @property
    def remote(self) -> bool:
        return bool(self.url)

    def download_name(self) -> str:
        if self.filename:
            return self.filename
        name = Path(urllib.parse.urlparse(self.url or "").path).name
        return name or "download"


@dataclass
class Layout:
    root: str = ""  # folder inside the unpacked archive that holds ``files`` ("" = the folder itself)
    files: list[str] = field(default_factory=list)  # globs; ``{lang}`` is expanded over the languages
    line_aligned: bool = False  # files of one ``{lang}`` pattern have the same number of lines (N-way)
    format: str = ""  # "tsv" for a single-file bitext
    columns: int = 0


@dataclass
class Manifest:
    id: str
    kind: str
    languages: list[str] | str  # explicit codes, or "all" (whatever the copy holds)
    source: Source
    layout: Layout
    license: str = ""
    citation: str = ""
    description: str = ""
    homepage: str = ""
    path: Path = Path()

    @property
    def is_archive(self) -> bool:
        return bool(self.source.archive_format)


def manifest_dirs() -> list[Path]:
    """Search path: ``$NLLB_MINI_MANIFESTS`` (os.pathsep list), ``$NLLB_MINI_HOME/manifests``, the repo's."""
    dirs = [Path(p) for p in os.environ.get("NLLB_MINI_MANIFESTS", "").split(os.pathsep) if p]
    return dirs + [nllb_home() / "manifests", _REPO_MANIFESTS]


# Manifests are input from strangers (the README invites dropping shared ones in): every value is checked
# for its type, and every value that becomes part of a path must stay inside the folder it names.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_ID_RULE = "a plain name of letters, digits, '.', '_' and '-' (it names the folder data/ID), e.g. \"my-corpus\""
LAYOUT_FORMATS = ("", "tsv")
_SHA_RULE = "64 lowercase hex digits in quotes (what `sha256sum FILE` prints)"


def check_id(corpus_id: object, where: str = "") -> str:
    """``corpus_id`` if it is a slug (it becomes a folder name under ``$NLLB_MINI_HOME/data``), else a UserError."""
    if isinstance(corpus_id, str) and _ID_RE.fullmatch(corpus_id):
        return corpus_id
    raise UserError(f"{where}corpus id {corpus_id!r} is not {_ID_RULE}")


def is_plain_name(name: str) -> bool:
    """A file name with no folder part, not hidden (``.`` names are mt-data's own bookkeeping) and not ``..``."""
    return (
        bool(name)
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
        and len(name.encode("utf-8", "surrogateescape")) <= 255
    )


def is_inside_path(rel: str) -> bool:
    """A relative path (or glob) that cannot leave the folder it is joined to: not absolute, no ``..`` part."""
    return (
        not rel.startswith(("/", "\\"))
        and "\0" not in rel
        and ".." not in re.split(r"[/\\]", rel)
        and not re.match(r"[A-Za-z]:", rel)
    )


def read_text(path: Path, what: str, fix: str = "save it as UTF-8") -> str:
    """A UTF-8 file's text (a BOM is dropped); a UserError naming the line of the first non-UTF-8 byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise located(path, line, f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x}); {fix}") from None


def _show(value: object) -> str:
    """A value the way it is written in TOML, cut to a readable length."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _line_of(text: str, table: str | None, key: str) -> int | None:
    """The line of ``key = ...`` in ``[table]`` (None: top level), for error messages; None if not found."""
    current, in_multiline = None, False
    key_re = re.compile(rf"""\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    for n, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            in_multiline = (line.count('"""') + line.count("'''")) % 2 == 0
            continue
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            current = stripped[1:].split("]", 1)[0].strip().strip("\"'")
        elif current == table and key_re.match(line):
            return n
        elif (line.count('"""') + line.count("'''")) % 2 == 1:
            in_multiline = True
    return None


class _Table:
    """Typed reads of one table of a manifest; a wrong value is a one-line error naming file, line, key and fix."""

    def __init__(self, path: Path, text: str, raw: dict, table: str | None):
        self.path, self.text, self.raw, self.table = path, text, raw, table

    def error(self, key: str, message: str) -> UserError:
        prefix = f"[{self.table}] " if self.table else ""
        where = _line_of(self.text, self.table, key)
        if key not in self.raw:
            return located(self.path, where, f"{prefix}{message}")
        return located(self.path, where, f"{prefix}{key} = {_show(self.raw[key])}: {message}")

    def get(self, key: str, kind: type, rule: str, default: Any = None) -> Any:
        value = self.raw.get(key, default)
        if key in self.raw and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise self.error(key, f"must be {rule}")
        return value

    def text_value(self, key: str, default: Any = "", rule: str = 'a quoted string ("...")') -> Any:
        return self.get(key, str, rule, default)

    def table_value(self, key: str) -> dict:
        value = self.raw.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table: write a [{key}] section with one `name = value` per line")
        return value

    def check_keys(self, allowed: list[str]) -> None:
        unknown = sorted(set(self.raw) - set(allowed))
        if unknown:
            raise located(
                self.path,
                _line_of(self.text, self.table, unknown[0]),
                f"[{self.table}] has unknown keys {unknown}; allowed: {allowed}",
            )


def _parse_source(path: Path, text: str, raw: dict) -> Source:
    t = _Table(path, text, raw, "source")
    t.check_keys(list(Source.__dataclass_fields__))
    src = Source(
        url=t.text_value("url", None),
        sha256=t.text_value("sha256", None, _SHA_RULE),
        size=t.get("size", int, "a whole number of bytes without quotes, e.g. size = 25585843"),
        archive_format=t.text_value("archive_format", None),
        filename=t.text_value("filename", None),
        local_glob=t.text_value("local_glob", None),
        local_path=t.text_value("local_path", None),
        build=t.text_value("build", None),
    )
    if not (src.url or src.local_glob or src.local_path is not None):
        raise located(path, None, "[source] needs `url` (+ sha256, size) or `local_glob` or `local_path`")
    if src.url and urllib.parse.urlparse(src.url).scheme not in ("http", "https"):
        raise t.error("url", "must be an http:// or https:// URL; for a file you have, run `mt-data register ID PATH`")
    if src.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", src.sha256):
        raise t.error("sha256", f"must be {_SHA_RULE}")
    if src.size is not None and src.size < 0:
        raise t.error("size", "must be a byte count >= 0")
    if src.archive_format is not None and src.archive_format not in ARCHIVE_FORMATS:
        raise t.error("archive_format", f"use one of {', '.join(ARCHIVE_FORMATS)}")
    if src.filename is not None and not is_plain_name(src.filename):
        raise t.error(
            "filename", "must be a plain file name (no folder, no leading '.', no '..'), e.g. \"corpus.tar.gz\""
        )
    if src.url and not src.filename and not is_plain_name(src.download_name()):
        raise t.error("url", f'ends in {src.download_name()!r}, which is not a file name: add filename = "NAME"')
    return src


def _parse_layout(path: Path, text: str, raw: dict) -> Layout:
    t = _Table(path, text, raw, "layout")
    t.check_keys(list(Layout.__dataclass_fields__))
    lay = Layout(
        root=t.text_value("root"),
        files=t.get("files", list, 'a list of quoted patterns, e.g. ["dev/{lang}.dev"]', []),
        line_aligned=t.get("line_aligned", bool, "true or false (without quotes)", False),
        format=t.text_value("format"),
        columns=t.get("columns", int, "a whole number without quotes", 0),
    )
    if not is_inside_path(lay.root):
        raise t.error("root", "must be a folder inside the unpacked copy (relative, without '..')")
    if not all(isinstance(f, str) and f and is_inside_path(f) for f in lay.files):
        raise t.error("files", "must be quoted patterns relative to the copy (no leading '/', no '..')")
    if lay.format not in LAYOUT_FORMATS:
        raise t.error("format", 'use "tsv" for a single src<TAB>tgt file, or leave it out')
    if "columns" in raw and lay.columns < 2:
        raise t.error("columns", "a bitext has at least 2 tab-separated columns")
    return lay


def _parse_manifest(path: Path) -> Manifest:
    text = read_text(path, "manifest")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise located(path, None, f"not valid TOML ({exc}); fix the syntax") from None
    top = _Table(path, text, raw, None)
    for key in ("id", "kind", "languages", "source"):
        if key not in raw:
            raise located(path, None, f"manifest lacks the required key {key!r}")
    cid, kind = raw["id"], raw["kind"]
    if not (isinstance(cid, str) and _ID_RE.fullmatch(cid)):
        raise top.error("id", f"must be {_ID_RULE}")
    if not (isinstance(kind, str) and kind in KINDS):
        raise top.error("kind", f"must be one of {', '.join(KINDS)} (in quotes)")
    langs = raw["languages"]
    if isinstance(langs, list) and all(isinstance(c, str) for c in langs):
        for code in langs:
            check_code(code, f"{path}: languages")
    elif langs != "all":
        raise top.error("languages", 'must be a list of quoted codes (["eng_Latn", "deu_Latn"]) or "all"')
    source = _parse_source(path, text, top.table_value("source"))
    layout = _parse_layout(path, text, top.table_value("layout"))
    return Manifest(
        id=cid,
        kind=kind,
        languages=langs,
        source=source,
        layout=layout,
        license=top.text_value("license"),
        citation=top.text_value("citation"),
        description=top.text_value("description"),
        homepage=top.text_value("homepage"),
        path=path,
    )


def list_manifests(problems: list[UserError] | None = None) -> list[Manifest]:
    """Every manifest on the search path; an ID found twice keeps the first (user manifests win).

    With ``problems`` given, a manifest that does not parse is skipped and its error appended there, so one
    bad file does not hide every other corpus; without it the first bad manifest raises.
    """
    seen: dict[str, Manifest] = {}
    for d in manifest_dirs():
        for p in sorted(d.glob("*.toml")) if d.is_dir() else []:
            try:
                m = _parse_manifest(p)
            except UserError as exc:
                if problems is None:
                    raise
                problems.append(exc)
                continue
            seen.setdefault(m.id, m)
    return sorted(seen.values(), key=lambda m: m.id)


def load_manifest(id_or_path: str) -> Manifest:
    """A manifest by ID (``flores200``) or by the path of a ``.toml`` file."""
    if id_or_path.endswith(".toml") and Path(id_or_path).is_file():
        return _parse_manifest(Path(id_or_path))
    if not _ID_RE.fullmatch(id_or_path):
        raise UserError(f"{id_or_path!r} is not a corpus id ({_ID_RULE}) nor a .toml file; run `mt-data list`")
    for d in manifest_dirs():
        p = d / f"{id_or_path}.toml"
        if p.is_file():
            m = _parse_manifest(p)
            if m.id != id_or_path:
                raise located(p, None, f"id {m.id!r} differs from the file name; rename the file or the id")
            return m
    known = ", ".join(sorted({p.stem for d in manifest_dirs() if d.is_dir() for p in d.glob("*.toml")})) or "none"
    raise UserError(
        f"no manifest for corpus {id_or_path!r} (known: {known}); add {id_or_path}.toml to "
        f"{_REPO_MANIFESTS} or {nllb_home() / 'manifests'}, or run `mt-data list`"
    )


# --------------------------------------------------------------------------------------------------
# registry: ID -> local copy
# --------------------------------------------------------------------------------------------------
def nllb_home() -> Path:
    return Path(os.environ.get("NLLB_MINI_HOME") or Path.home() / ".cache" / "nllb-mini").expanduser()


def registry_path() -> Path:
    return nllb_home() / "registry.toml"


def default_dest(corpus_id: str) -> Path:
    return nllb_home() / "data" / check_id(corpus_id)


def read_registry() -> dict[str, dict]:
    """The registry's entries, each checked for a ``path``; a broken registry is a one-line error with the fix."""
    path = registry_path()
    if not path.is_file():
        return {}
    fix = "fix it, or delete it and run `mt-data register` / `mt-data fetch` again"
    text = read_text(path, "registry", fix)
    try:
        corpora = tomllib.loads(text).get("corpora", {})
    except tomllib.TOMLDecodeError as exc:
        raise located(path, None, f"registry is not valid TOML ({exc}); {fix}") from None
    if not isinstance(corpora, dict):
        raise located(
            path, _line_of(text, None, "corpora"), f"`corpora` must be a table of [corpora.ID] entries; {fix}"
        )
    for cid, entry in corpora.items():
        where = f"entry [corpora.{_toml_str(cid)}]"
        if not isinstance(entry, dict):
            raise located(path, _line_of(text, "corpora", cid), f"{where} must be a table with `path`; {fix}")
        for key in ("path", "data"):
            if key in entry and not isinstance(entry[key], str):
                raise located(
                    path,
                    _line_of(text, f"corpora.{cid}", key),
                    f"{where}: {key} = {_show(entry[key])} must be a quoted path; {fix}",
                )
        if "path" not in entry:
            raise located(path, None, f"{where} has no `path`; {fix}")
    return dict(corpora)


def _toml_str(value: str) -> str:
    # JSON string escapes (\" \\ \n \uXXXX) are valid TOML basic-string escapes.
    return json.dumps(value)


def _write_registry(entries: dict[str, dict]) -> None:
    with atomic_write(registry_path()) as fh:
        fh.write("# nllb-mini corpus registry, written by `mt-data register` and `mt-data fetch`.\n")
        fh.write("# `path`: the copy you gave or downloaded; `data`: what resolve(ID) returns.\n")
        for cid in sorted(entries):
            fh.write(f"\n[corpora.{_toml_str(cid)}]\n")
            for key, val in entries[cid].items():
                fh.write(f"{key} = {_toml_str(str(val))}\n")


def record_copy(corpus_id: str, path: Path, data: Path, how: str, sha256: str | None = None) -> None:
    """Add or replace one registry entry; the lock makes parallel fetch/register runs each keep their entry."""
    entry = {
        "path": str(path.resolve()),
        "data": str(data.resolve()),
        "how": how,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if sha256:
        entry["sha256"] = sha256
    with exclusive_lock(registry_path(), f"the corpus registry {registry_path()}", wait=True):
        entries = read_registry()
        entries[corpus_id] = entry
        _write_registry(entries)


def how_to_get(m: Manifest) -> str:
    if m.source.remote:
        return (
            f"run `mt-data fetch {m.id}` (downloads {m.source.url}) or, offline, download it elsewhere and "
            f"run `mt-data register {m.id} PATH`"
        )
    if m.source.build:
        return f"build it with `{m.source.build}`, then run `mt-data register {m.id} DIR`"
    return f"run `mt-data register {m.id} PATH` with your local copy"


def resolve(corpus_id: str) -> Path:
    """The local copy of a corpus with its manifest's layout: registered, else fetched, else a clear error."""
    m = load_manifest(corpus_id)
    entry = read_registry().get(m.id)
    if entry:
        data = Path(entry.get("data") or entry["path"])
        if not data.exists():
            raise UserError(
                f"corpus {m.id!r} is registered at {data} ({registry_path()}) but that path is gone: " + how_to_get(m)
            )
        return data
    dest = default_dest(m.id)
    if m.source.remote and dest.is_dir():
        data = data_root(m, dest)
        if data is not None and not check_layout(m, data):
            return data
    raise UserError(f"corpus {m.id!r} is not available on this machine: {how_to_get(m)}")


# --------------------------------------------------------------------------------------------------
# the layout of a local copy
# --------------------------------------------------------------------------------------------------
def data_root(m: Manifest, folder: Path) -> Path | None:
    """``folder`` or its ``layout.root`` subfolder, whichever holds the data."""
    if m.layout.root and (folder / m.layout.root).is_dir():
        return folder / m.layout.root
    if folder.is_dir():
        return folder
    return None


def langs_in(m: Manifest, folder: Path) -> list[str]:
    """The manifest's languages, or (``"all"``) every code that some ``{lang}`` pattern matches."""
    if isinstance(m.languages, list):
        return list(m.languages)
    found: set[str] = set()
    for pat in m.layout.files:
        if "{lang}" not in pat:
            continue
        rx = fnmatch.translate(pat.replace("{lang}", "\x00")).replace("\x00", "(?P<lang>[a-z]{3}_[A-Z][a-z]{3})", 1)
        creg = re.compile(rx.replace("\x00", "(?P=lang)"))
        for p in folder.rglob("*"):
            mt = creg.match(p.relative_to(folder).as_posix())
            if mt:
                found.add(mt.group("lang"))
    return sorted(found)


def check_layout(m: Manifest, folder: Path) -> list[str]:
    """Problems of an unpacked copy: missing files per ``[layout] files``, unaligned N-way files."""
    problems: list[str] = []
    langs = langs_in(m, folder)
    if isinstance(m.languages, str) and any("{lang}" in p for p in m.layout.files) and not langs:
        problems.append(f"no language files at all (expected {', '.join(m.layout.files)})")
    for pat in m.layout.files:
        expanded = [pat.replace("{lang}", lang) for lang in langs] if "{lang}" in pat else [pat]
        line_counts: dict[int, list[str]] = {}
        for rel in expanded:
            hits = sorted(glob.glob(str(folder / rel)))
            if not hits:
                problems.append(f"missing {rel}")
                continue
            if m.layout.line_aligned and "{lang}" in pat and len(hits) == 1:
                line_counts.setdefault(count_lines(Path(hits[0]), check_utf8=False), []).append(rel)
        if len(line_counts) > 1:
            summary = "; ".join(
                f"{n} lines: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
                for n, v in sorted(line_counts.items(), key=lambda kv: -len(kv[1]))
            )
            problems.append(f"files of {pat} are not line-aligned ({summary})")
    return problems
