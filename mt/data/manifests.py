"""Corpus manifests (``data_manifests/*.toml``): list, fetch, verify, register and resolve corpora.

A manifest says what a corpus is (id, kind, languages, licence, citation), where it comes from (a URL
with sha256/size, or local files) and what its files look like once unpacked (``[layout]``). Other rooms
never hard-code paths: they call ``resolve(ID)`` and get the directory (or file) with that layout, from
a copy the user registered (offline machines) or one ``mt-data fetch`` downloaded.

Where things live (``$NLLB_MINI_HOME``, default ``~/.cache/nllb-mini``)::

    registry.toml          ID -> local copy, written by `mt-data register` and `mt-data fetch` (under
                           registry.toml.lock, so parallel runs each keep their entry)
    data/{ID}/             default download + unpack folder of `mt-data fetch ID`; `.lock` (one fetch at a
                           time), `.{archive}.unpacked` (sha256 of the unpacked archive + what it placed)
    manifests/*.toml       your own manifests (searched before the ones shipped in data_manifests/)

Manifests and archives may come from strangers, so nothing in them is trusted as a path: ids are slugs,
``[source] filename`` a plain name, ``[layout]`` paths relative without ``..``; archive members that land or
point outside the destination are refused before anything is written, and an unpack replaces only
what an earlier unpack placed. Every value has its type checked, with a one-line error naming the line.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import http.client
import json
import os
import posixpath
import re
import shutil
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from mt.common.errors import UserError, located
from mt.common.files import atomic_write, exclusive_lock, remove_stale_temps, sha256_file, temp_name
from mt.common.langs import check_code
from mt.common.textio import count_lines

KINDS = ("parallel", "monolingual", "eval-nway")
ARCHIVE_FORMATS = ("tar.gz", "tgz", "tar", "zip")
_REPO_MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
_CHUNK = 1 << 16


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


def _record(corpus_id: str, path: Path, data: Path, how: str, sha256: str | None = None) -> None:
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


def _how_to_get(m: Manifest) -> str:
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
                f"corpus {m.id!r} is registered at {data} ({registry_path()}) but that path is gone: " + _how_to_get(m)
            )
        return data
    dest = default_dest(m.id)
    if m.source.remote and dest.is_dir():
        data = _data_root(m, dest)
        if data is not None and not check_layout(m, data):
            return data
    raise UserError(f"corpus {m.id!r} is not available on this machine: {_how_to_get(m)}")


# --------------------------------------------------------------------------------------------------
# layout and checksum checks
# --------------------------------------------------------------------------------------------------
def _data_root(m: Manifest, folder: Path) -> Path | None:
    """``folder`` or its ``layout.root`` subfolder, whichever holds the data."""
    if m.layout.root and (folder / m.layout.root).is_dir():
        return folder / m.layout.root
    if folder.is_dir():
        return folder
    return None


def _langs_in(m: Manifest, folder: Path) -> list[str]:
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
    langs = _langs_in(m, folder)
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


def check_tsv(path: Path, columns: int = 2) -> tuple[int, list[str]]:
    """(number of lines, problems) of a ``src<TAB>tgt`` file; stops listing after a few problems."""
    problems: list[str] = []
    n = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                problems.append(
                    f"{path}:{n}: invalid UTF-8 at byte {exc.start} of the line; re-encode the file as UTF-8"
                )
                continue
            got = len(line.split("\t"))
            if got != columns:
                problems.append(f"{path}:{n}: {got} tab-separated columns, expected {columns} (src<TAB>tgt)")
            if len(problems) >= 10:
                problems.append("... (stopped after 10 problems)")
                break
    if n == 0:
        problems.append(f"{path}: empty file")
    return n, problems


def check_archive(m: Manifest, path: Path) -> str:
    """sha256 + size of an archive against the manifest; returns the sha256, raises on mismatch."""
    size = path.stat().st_size
    if m.source.size is not None and size != m.source.size:
        raise UserError(
            f"{path}: size {size:,} bytes, but {m.path} expects {m.source.size:,} bytes: the file is truncated or a "
            f"different version; download it again (`mt-data fetch {m.id}`)"
        )
    got = sha256_file(path)
    if m.source.sha256 and got != m.source.sha256:
        raise UserError(
            f"{path}: sha256 mismatch: expected {m.source.sha256} ({m.path}), got {got}; the file is corrupt or a "
            f"different release: delete it and run `mt-data fetch {m.id}`, or update sha256 in {m.path} if you "
            f"trust this copy"
        )
    return got


def verify(corpus_id: str, path: str | os.PathLike | None = None) -> str:
    """Check a copy (archive, unpacked folder or TSV) against the manifest; a one-line summary or UserError."""
    m = load_manifest(corpus_id)
    if path is None:
        entry = read_registry().get(m.id)
        if entry and Path(entry["path"]).is_file() and m.is_archive:
            target = Path(entry["path"])
        elif m.source.local_glob and not entry:
            hits = glob.glob(m.source.local_glob)
            if not hits:
                raise UserError(f"{m.id}: no files match {m.source.local_glob} ({m.path}); {_how_to_get(m)}")
            return f"{m.id}: {len(hits)} source files match {m.source.local_glob}; {_how_to_get(m)}"
        else:
            target = resolve(m.id)
    else:
        target = Path(path)
    if not target.exists():
        raise UserError(f"{target}: no such file or directory")
    if m.layout.format == "tsv" and not target.is_file():
        raise UserError(f"{target} is a folder, but {m.id} ({m.path}) is a single TSV file: pass the file")
    if target.is_file() and m.layout.format == "tsv":
        n, problems = check_tsv(target, m.layout.columns or 2)
        if problems:
            raise UserError(f"{target} is not a valid {m.id} bitext:\n  " + "\n  ".join(problems))
        return f"{m.id}: OK, {target} has {n:,} {m.layout.columns or 2}-column lines"
    if target.is_file():
        if not m.is_archive:
            raise UserError(f"{target}: {m.id} ({m.path}) is not an archive; pass its unpacked folder")
        got = check_archive(m, target)
        note = "" if m.source.sha256 else f' (the manifest has no sha256: add sha256 = "{got}" to {m.path})'
        size_note = "" if m.source.size is not None else f" (add size = {target.stat().st_size} to {m.path})"
        return f"{m.id}: OK, {target} ({target.stat().st_size:,} bytes, sha256 {got}){note}{size_note}"
    data = _data_root(m, target)
    assert data is not None
    problems = check_layout(m, data)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise UserError(
            f"{data} does not have the layout of {m.id} ({m.path}): {len(problems)} problem(s):\n  "
            + "\n  ".join(shown)
        )
    nlang = len(_langs_in(m, data))
    return f"{m.id}: OK, {data} has the expected layout ({nlang} languages, {', '.join(m.layout.files)})"


# --------------------------------------------------------------------------------------------------
# download with resume
# --------------------------------------------------------------------------------------------------
class _Offline(Exception):
    pass


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "nllb-mini/0.1 (mt-data fetch)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc  # range not satisfiable: the .part is already complete (or bigger than the file)
        raise
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise _Offline(getattr(exc, "reason", exc)) from exc


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, file size) of a ``Content-Range`` header; None for what it does not say."""
    m = re.fullmatch(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", (header or "").strip())
    if not m:
        return None, None, None
    first, last, size = (int(g) if g and g.isdigit() else None for g in m.groups())
    return first, last, size


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    progress: bool = True,
    context: str = "",
    corpus_id: str = "ID",
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` with HTTP Range resume; rename only once verified.

    ``context`` names the manifest in errors. Connection failures before any byte arrives fail at once
    (offline machines should not wait); a connection lost mid-way is resumed up to ``retries`` times.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        if size is not None and offset == size:
            break  # a previous run got every byte; only verification is left
        try:
            resp = _open(url, offset, timeout)
        except _Offline as exc:
            host = urllib.parse.urlparse(url).netloc
            kept = f" ({offset:,} bytes received so far are kept in {part}: run again to resume)" if offset else ""
            raise UserError(
                f"cannot reach {host} ({exc}){' for ' + context if context else ''}. This machine looks offline: "
                f"download {url} on another machine and run `mt-data register {corpus_id} PATH` with it, or change the "
                f"url in the manifest{kept}"
            ) from None
        except urllib.error.HTTPError as exc:
            raise UserError(
                f"{url}: the server answered HTTP {exc.code} {exc.reason}{' (' + context + ')' if context else ''}; "
                f"the URL may have moved: fix it in the manifest or register a local copy with `mt-data register {corpus_id} PATH`"
            ) from None
        if isinstance(resp, urllib.error.HTTPError):  # 416: the range starts at or past the end of the file
            server_size = _content_range(resp.headers.get("Content-Range"))[2]
            resp.close()
            if offset and server_size == offset:
                break  # the server confirms the .part holds the whole file
            part.unlink(missing_ok=True)  # bigger than (or unconfirmed against) the server's file: start again
            attempt += 1
            if attempt > retries:
                raise UserError(f"{url}: the server refuses the byte range of {part}; delete it and retry")
            continue
        with resp:
            start, _, server_size = (
                _content_range(resp.headers.get("Content-Range")) if resp.status == 206 else (0, None, None)
            )
            if start is None or start not in (0, offset):  # a part we did not ask for: appending it would corrupt
                part.unlink(missing_ok=True)
                attempt += 1
                if attempt > retries:
                    raise UserError(
                        f"{url}: the server answers resume requests with the wrong bytes (HTTP 206, "
                        f"Content-Range {resp.headers.get('Content-Range')!r}); report it to its owner"
                    )
                print(
                    f"the server sent another byte range than asked ({resp.headers.get('Content-Range')!r}); "
                    f"downloading {dest.name} again from the start",
                    file=sys.stderr,
                )
                continue
            if offset and start == 0:
                print(
                    f"the server ignored the resume request; downloading {dest.name} again from the start",
                    file=sys.stderr,
                )
                offset = 0
            length = resp.headers.get("Content-Length")
            total = server_size or (offset + int(length) if length is not None and length.isdigit() else size)
            mode = "ab" if offset else "wb"
            got_bytes = offset
            try:
                with (
                    open(part, mode) as fh,
                    tqdm(
                        total=total,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=not progress,
                        file=sys.stderr,
                        leave=False,
                    ) as bar,
                ):
                    while chunk := resp.read(_CHUNK):
                        fh.write(chunk)
                        got_bytes += len(chunk)
                        bar.update(len(chunk))
                complete = total is None or got_bytes >= total
            except (OSError, http.client.HTTPException) as exc:
                complete, reason = False, exc
            else:
                reason = "connection closed early"
        if complete:
            break
        attempt += 1
        if attempt > retries:
            raise UserError(
                f"{url}: download interrupted {retries + 1} times ({reason}); {part} keeps the "
                f"{part.stat().st_size:,} bytes received: run the same command again to resume"
            )
        print(
            f"connection lost at {got_bytes:,} bytes ({reason}); resuming (attempt {attempt + 1}/{retries + 1})",
            file=sys.stderr,
        )
        time.sleep(min(0.2 * attempt, 2.0))
    _verify_part(part, dest, url=url, sha256=sha256, size=size, context=context)
    os.replace(part, dest)
    return dest


def _verify_part(part: Path, dest: Path, *, url: str, sha256: str | None, size: int | None, context: str) -> None:
    """Size and checksum of a finished ``.part``; a bad one is deleted (resuming it cannot help)."""
    where = f" ({context})" if context else ""
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise UserError(
            f"{url}: got {got_size:,} bytes, expected {size:,}{where}; nothing was kept at {dest}: run the command "
            f"again, and if it persists the file changed upstream (update size/sha256 in the manifest)"
        )
    if sha256:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise UserError(
                f"checksum mismatch for {url}{where}: expected sha256 {sha256}, got {got}; the download was deleted "
                f"and nothing was written to {dest}. Run the command again; if it fails the same way the file changed "
                f"upstream: check it, then update sha256 in the manifest or register a trusted copy"
            )
    else:
        print(f"warning: no sha256 in the manifest{where}; the file's sha256 is {sha256_file(part)}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# unpack
# --------------------------------------------------------------------------------------------------
# Archives are checked member by member before anything is written, and extracted into a temp folder
# inside the destination, so a refused or killed unpack leaves nothing half-done; tarfile's "data"
# filter then catches what a look at the names cannot see (a link that leaves through an earlier link).
_FILTER_ERROR = getattr(tarfile, "FilterError", ())
_ABSOLUTE_RE = re.compile(r"[/\\]|[A-Za-z]:")


def member_problem(name: str, link: str | None = None, hard: bool = False) -> str | None:
    """Why an archive member may not be unpacked (it lands or points outside the destination), or None.

    ``link``: the target of a symbolic link (relative to the member's folder) or, with ``hard``, of a hard
    link (relative to the archive's root).
    """
    if _ABSOLUTE_RE.match(name):
        return "has an absolute path, which points outside the destination"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' in its path, which points outside the destination"
    if link is not None:
        if _ABSOLUTE_RE.match(link):
            return f"is a link to the absolute path {link!r}, which points outside the destination"
        target = posixpath.normpath(posixpath.join("" if hard else posixpath.dirname(name), link))
        if target == ".." or target.startswith("../"):
            return f"is a link to {link!r}, which points outside the destination"
    return None


def _refused(archive: Path, member: str, reason: str) -> UserError:
    return UserError(
        f"{archive}: refused to unpack member {member!r}: it {reason}; nothing was unpacked: the "
        f"archive is unsafe, get it from a source you trust"
    )


def _damaged(archive: Path, fmt: str, exc: BaseException) -> UserError:
    return UserError(
        f"{archive}: cannot unpack as {fmt} ({exc}); the file is damaged or not a {fmt} archive: "
        f"fetch it again, or check archive_format in the manifest"
    )


def _filter_reason(exc: Exception) -> str:
    """tarfile's filter refusal as the rest of a sentence that starts with the member's name."""
    kind = type(exc).__name__
    if kind in ("OutsideDestinationError", "LinkOutsideDestinationError", "AbsoluteLinkError", "AbsolutePathError"):
        return f"points outside the destination ({exc})"
    if kind == "SpecialFileError":
        return "is a special file (a device or FIFO), which a corpus never needs"
    return f"was refused by tarfile's safety filter ({exc})"


def _untar(archive: Path, tmp: Path, fmt: str, progress: bool) -> None:
    mode = "r:gz" if fmt in ("tar.gz", "tgz") else "r:"
    try:
        with tarfile.open(archive, mode) as tf:
            members = tf.getmembers()
            for mem in members:
                link = mem.linkname if mem.issym() or mem.islnk() else None
                why = member_problem(mem.name, link, hard=mem.islnk())
                if why is None and not (mem.isfile() or mem.isdir() or link is not None):
                    why = "is a special file (a device or FIFO), which a corpus never needs"
                if why is None and link is not None and not hasattr(tarfile, "data_filter"):
                    why = "is a link, and this Python (before 3.10.12) cannot check where links lead"
                if why:
                    raise _refused(archive, mem.name, why)
            for mem in tqdm(members, desc=f"unpack {archive.name}", disable=not progress, file=sys.stderr, leave=False):
                if hasattr(tarfile, "data_filter"):
                    tf.extract(mem, tmp, filter="data")
                else:
                    tf.extract(mem, tmp)
    except _FILTER_ERROR as exc:
        raise _refused(archive, exc.tarinfo.name, _filter_reason(exc)) from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _damaged(archive, fmt, exc) from None
    except OSError as exc:
        if exc.errno is not None:  # full disk, permissions: not the archive's fault (cli_entry says what)
            raise
        raise _damaged(archive, fmt, exc) from None  # gzip.BadGzipFile and friends


def _unzip(archive: Path, tmp: Path, fmt: str, progress: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                is_link = stat.S_ISLNK(info.external_attr >> 16)
                why = member_problem(info.filename, zf.read(info).decode("utf-8", "replace") if is_link else None)
                if why:
                    raise _refused(archive, info.filename, why)
            for info in tqdm(infos, desc=f"unpack {archive.name}", disable=not progress, file=sys.stderr, leave=False):
                zf.extract(info, tmp)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise _damaged(archive, fmt, exc) from None
    except (NotImplementedError, RuntimeError, zipfile.LargeZipFile) as exc:  # encrypted, unknown compression
        raise UserError(
            f"{archive}: cannot unpack this zip ({exc}): unpack it with another tool and register the "
            f"folder (`mt-data register ID DIR`)"
        ) from None
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise _damaged(archive, fmt, exc) from None


def _marker(archive: Path, dest: Path) -> Path:
    return dest / f".{archive.name}.unpacked"


def _read_marker(marker: Path) -> tuple[str, list[str]]:
    """(sha256 of the unpacked archive, or "pending" while its files are being moved; top-level names placed)."""
    try:
        lines = marker.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return "", []
    return (lines[0].strip() if lines else ""), [name for name in lines[1:] if name]


def _write_marker(marker: Path, sha: str, names: list[str]) -> None:
    with atomic_write(marker) as fh:
        fh.write("".join(f"{line}\n" for line in [sha, *names]))


def unpack(archive: Path, dest: Path, fmt: str, progress: bool = True, sha: str = "") -> list[str]:
    """Extract ``archive`` into ``dest`` via a temp folder, so a killed run leaves no half-unpacked tree.

    Members that would land or point outside ``dest`` are refused before anything is written. An entry of
    ``dest`` is only replaced when an earlier unpack placed it there (its marker lists it): what the user
    keeps in ``--dest`` is never deleted. Returns the top-level names placed; the marker records them.
    """
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest, ".unpack.")  # the full-size leftovers of a killed unpack
    marker = _marker(archive, dest)
    ours = {name for mk in dest.glob(".*.unpacked") for name in _read_marker(mk)[1]}
    tmp = dest / temp_name("unpack")
    tmp.mkdir()
    try:
        (_unzip if fmt == "zip" else _untar)(archive, tmp, fmt, progress)
        names = sorted(child.name for child in tmp.iterdir())
        for name in names:
            target = dest / name
            if (target.exists() or target.is_symlink()) and name not in ours:
                raise UserError(
                    f"{target} already exists and was not unpacked by mt-data, and {archive} holds "
                    f"{name!r}: move it away, or unpack into another folder (mt-data fetch ID --dest DIR)"
                )
        _write_marker(marker, "pending", sorted(set(names) | set(_read_marker(marker)[1])))  # a kill from here on
        for name in names:  # leaves a marker that lets the next run replace what this one placed
            target = dest / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(tmp / name, target)
        _write_marker(marker, sha or sha256_file(archive), names)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack_once(m: Manifest, archive: Path, dest: Path, sha: str, progress: bool) -> Path:
    """Unpack unless this archive (by sha256) already is; the caller holds ``_folder_lock(dest)``."""
    if not (_read_marker(_marker(archive, dest))[0] == sha and _data_root(m, dest) is not None):
        print(f"unpacking {archive} into {dest}", file=sys.stderr)
        unpack(archive, dest, m.source.archive_format or "", progress=progress, sha=sha)
    data = _data_root(m, dest)
    assert data is not None
    problems = check_layout(m, data)
    if problems:
        raise UserError(
            f"{archive} unpacked into {dest}, but it lacks the layout of {m.id} ({m.path}): "
            + "; ".join(problems[:5])
            + (f" ... ({len(problems)} problems)" if len(problems) > 5 else "")
        )
    return data


def _folder_lock(dest: Path):
    """One fetch/register at a time per download folder (two would append to one ``.part``, unpack over each other)."""
    dest.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(dest, f"the corpus folder {dest} (another `mt-data fetch` or `mt-data register`)")


# --------------------------------------------------------------------------------------------------
# fetch and register
# --------------------------------------------------------------------------------------------------
def fetch(
    corpus_id: str,
    dest: str | os.PathLike | None = None,
    *,
    timeout: float = 10.0,
    retries: int = 3,
    progress: bool = True,
) -> Path:
    """Download (resuming), verify, unpack and register a corpus; returns what ``resolve`` will return."""
    m = load_manifest(corpus_id)
    if not m.source.remote:
        raise UserError(f"{m.id} ({m.path}) is a local corpus, there is nothing to download: {_how_to_get(m)}")
    read_registry()  # a broken registry: say so before downloading, not after
    dest_dir = Path(dest) if dest else default_dest(m.id)
    archive = dest_dir / m.source.download_name()  # a plain name (checked when the manifest was read)
    context = f"manifest {m.path}"
    with _folder_lock(dest_dir):
        if archive.is_file():
            print(f"{archive} exists, verifying", file=sys.stderr)
            sha = check_archive(m, archive)
        else:
            download(
                m.source.url or "",
                archive,
                sha256=m.source.sha256,
                size=m.source.size,
                timeout=timeout,
                retries=retries,
                progress=progress,
                context=context,
                corpus_id=m.id,
            )
            sha = m.source.sha256 or sha256_file(archive)
            print(f"downloaded {archive} ({archive.stat().st_size:,} bytes, sha256 OK)", file=sys.stderr)
        data = _unpack_once(m, archive, dest_dir, sha, progress) if m.is_archive else archive
        _record(m.id, archive, data, "fetch", sha)
    return data


def register(corpus_id: str, path: str | os.PathLike, *, progress: bool = True) -> Path:
    """Point ``corpus_id`` at a local copy (archive, unpacked folder or file) after verifying it."""
    m = load_manifest(corpus_id)
    read_registry()  # a broken registry: say so before unpacking, not after
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such file or directory (mt-data register {m.id} PATH)")
    sha = None
    if p.is_file() and m.is_archive:
        sha = check_archive(m, p)
        with _folder_lock(default_dest(m.id)):
            data = _unpack_once(m, p, default_dest(m.id), sha, progress)
    elif p.is_file():
        if m.layout.format == "tsv":
            _, problems = check_tsv(p, m.layout.columns or 2)
            if problems:
                raise UserError(f"{p} is not a valid {m.id} bitext:\n  " + "\n  ".join(problems))
        data = p
    else:
        data = _data_root(m, p) or p
        if m.layout.format == "tsv":
            raise UserError(f"{p} is a folder, but {m.id} ({m.path}) is a single TSV file: pass the file")
        problems = check_layout(m, data)
        if problems:
            raise UserError(
                f"{data} does not have the layout of {m.id} ({m.path}): "
                + "; ".join(problems[:10])
                + (f" ... ({len(problems)} problems)" if len(problems) > 10 else "")
            )
    _record(m.id, p, data, "register", sha)
    return data


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
_EPILOG = """examples:
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


def _print_list(out: IO[str]) -> None:
    reg = read_registry()
    rows = []
    problems: list[UserError] = []
    manifests = list_manifests(problems)
    for exc in problems:  # one bad manifest must not hide the others
        print(f"warning: skipped a manifest: {exc}", file=sys.stderr)
    for m in manifests:
        langs = m.languages if isinstance(m.languages, str) else str(len(m.languages))
        if m.id in reg:
            where = reg[m.id].get("data", reg[m.id]["path"])
        elif m.source.remote:
            where = "not fetched"
        else:
            where = "not registered"
        rows.append((m.id, m.kind, langs, where, m.description))
    if not rows:
        print(f"no manifests found in {', '.join(map(str, manifest_dirs()))}", file=out)
        return
    widths = [max(len(r[i]) for r in rows + [("id", "kind", "langs", "local copy", "")]) for i in range(4)]
    header = ("id", "kind", "langs", "local copy")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  description", file=out)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4], file=out)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mt-data",
        description="List, fetch, verify and register the corpora described in data_manifests/.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the manifests and where their local copies are")
    p = sub.add_parser(
        "fetch",
        help="download with resume, checksum, unpack, register",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id")
    p.add_argument("--dest", help="folder for the download and its unpacked files (default: $NLLB_MINI_HOME/data/ID)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    p.add_argument("--retries", type=int, default=3, help="resumes after a lost connection (default 3)")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser(
        "verify",
        help="checksum an archive or check an unpacked folder's layout",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id")
    p.add_argument("path", nargs="?", help="archive, folder or file (default: the registered or fetched copy)")
    p = sub.add_parser(
        "register",
        help="point an ID at a local copy (verified first)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id")
    p.add_argument("path")
    p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        _print_list(sys.stdout)
    elif args.cmd == "fetch":
        data = fetch(args.id, args.dest, timeout=args.timeout, retries=args.retries, progress=not args.no_progress)
        print(f"{args.id}: ready at {data} (registered in {registry_path()})")
    elif args.cmd == "verify":
        print(verify(args.id, args.path))
    elif args.cmd == "register":
        data = register(args.id, args.path, progress=not args.no_progress)
        print(f"{args.id}: registered {data} in {registry_path()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from mt.common.errors import cli_entry

    raise SystemExit(cli_entry(cli)(None))
