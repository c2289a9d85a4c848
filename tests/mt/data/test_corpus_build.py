"""End-to-end checks of ``mt-data build gettext`` on a tiny locale tree the test writes."""

import os
import time
from pathlib import Path

import pytest
from _mo_writer import mo_bytes, write_mo

from mt.common.langs import FLORES200_CODES, script_of
from mt.common.scripts import script_counts
from mt.data import layout
from mt.data.clean import norm_key
from mt.data.cli import data_main
from mt.data.gettext_corpus import DEMO_LANGS, GettextConfig, build_gettext_corpus, tier_of

WORDS = (
    "open close save print delete copy move show hide find replace select file folder window image "
    "page document printer network user account password device color font list table menu button "
    "new old big small first last hidden visible current default"
).split()
CYR = dict(zip("abcdefghijklmnopqrstuvwxyz", "абцдефгхийклмнопкрстуввхуз"))
N = 400


def english(i: int) -> str:
    n = 3 + i % 4
    words = [WORDS[(i * 7 + k * 11 + i // 40) % len(WORDS)] for k in range(n)]
    return " ".join(words).capitalize() + f" {WORDS[i % 40]}s {WORDS[(i // 40) % 40]}"


# locale -> (word transform, joiner, English indices it translates)
LANGS = {
    "de": (lambda w: w[::-1] + "en", " ", range(0, 380)),
    "de_CH": (lambda w: w[::-1] + "li", " ", range(370, 400)),  # a variant: only fills de's gaps
    "fr": (lambda w: "le" + w[::-1], " ", range(0, 350)),
    "ru": (lambda w: "".join(CYR[c] for c in w) + "ий", " ", range(50, 400)),
    "zh_CN": (lambda w: "".join(chr(0x4E00 + 97 * ord(c) + k) for k, c in enumerate(w[:3])), "", range(0, 300)),
    "xh": (lambda w: "uku" + w[::-1], " ", range(40, 160)),
    "wo": (lambda w: "ci" + w, " ", range(0, 5)),  # too small: skipped by --min-pairs
}
CODE = {
    "de": "deu_Latn",
    "de_CH": "deu_Latn",
    "fr": "fra_Latn",
    "ru": "rus_Cyrl",
    "zh_CN": "zho_Hans",
    "xh": "xho_Latn",
    "wo": "wol_Latn",
}
NOISE = [
    ("%s: %s", "%s : %s"),
    ("_Quit", "_Q"),  # one word
    ("<b>Bold</b> text is here", "<b>x</b> y z w"),
    ("See https://example.org for more", "a https://example.org b c"),
    ("Show the hidden window now", "Show the hidden window now"),  # untranslated copy
]


def translate(locale: str, i: int) -> str:
    fn, joiner, _ = LANGS[locale]
    return joiner.join(fn(w.lower()) for w in english(i).split())


def truth() -> dict[str, dict[str, str]]:
    """code -> English -> the translation the build must use (de wins over de_CH)."""
    out: dict[str, dict[str, str]] = {}
    for loc in ("de", "de_CH", "fr", "ru", "zh_CN", "xh", "wo"):
        for i in LANGS[loc][2]:
            out.setdefault(CODE[loc], {}).setdefault(english(i), translate(loc, i))
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("locale")
    assert len({english(i) for i in range(N)}) == N
    for loc, (_, _, idx) in LANGS.items():
        entries = [(english(i), translate(loc, i)) for i in idx]
        half = len(entries) // 2  # two catalogues per language, one of them big-endian
        write_mo(root / loc / "LC_MESSAGES" / "app.mo", entries[:half] + NOISE)
        write_mo(root / loc / "LC_MESSAGES" / "lib.mo", entries[half:], byteorder="big")
    write_mo(root / "en_GB" / "LC_MESSAGES" / "app.mo", [(english(i), english(i)) for i in range(50)])
    write_mo(root / "qq" / "LC_MESSAGES" / "app.mo", [(english(i), "qqq " + english(i)) for i in range(50)])
    data = mo_bytes([(english(i), translate("fr", i)) for i in range(360, 370)])
    (root / "fr" / "LC_MESSAGES" / "broken.mo").write_bytes(data[:-40])  # truncated
    os.symlink("app.mo", root / "fr" / "LC_MESSAGES" / "app-alias.mo")  # read once
    return root


def config(tree: Path, out: Path, **kw) -> GettextConfig:
    kw = {"dev_size": 10, "devtest_size": 15, "mono_size": 20, "min_pairs": 20, "workers": 1, "progress": False, **kw}
    return GettextConfig(out=str(out), locale_dir=str(tree), **kw)


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, build_gettext_corpus(config(tree, out))


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def train_side(out: Path, lang: str, side: str) -> list[str]:
    return lines(Path(f"{layout.train_prefix(out, 'eng_Latn', lang)}.{side}"))


def test_layout_languages_and_reports(built, tree):
    out, res = built
    assert res.langs == ["deu_Latn", "fra_Latn", "rus_Cyrl", "xho_Latn", "zho_Hans"]
    assert "wol_Latn" in res.skipped_langs and "--min-pairs" in res.skipped_langs["wol_Latn"]
    assert set(res.unknown_locales) == {"en_GB", "qq"}
    assert len(res.bad_files) == 1 and "broken.mo" in res.bad_files[0] and "truncated" in res.bad_files[0]
    for reason in ("placeholders", "min_words", "markup", "path_url_email", "untranslated", "decontaminated"):
        assert res.drops.get(reason, 0) > 0, reason
    for lang in res.langs:
        en, tg = train_side(out, lang, "eng_Latn"), train_side(out, lang, lang)
        assert len(en) == len(tg) > 0
        assert all(s.strip() == s and s and "\t" not in s for s in en + tg)
    assert (out / "build.json").is_file()


def test_train_pairs_are_true_translations_and_variants_merge(built):
    out, _ = built
    gold = truth()
    for lang in ("deu_Latn", "rus_Cyrl", "zho_Hans"):
        pairs = list(zip(train_side(out, lang, "eng_Latn"), train_side(out, lang, lang)))
        assert all(gold[lang][en] == tgt for en, tgt in pairs)
    de = dict(zip(train_side(out, "deu_Latn", "eng_Latn"), train_side(out, "deu_Latn", "deu_Latn")))
    assert any(t.split()[0].endswith("li") for t in de.values())  # de_CH fills de's gaps (380..399)
    assert not any(english(i) in de and de[english(i)].split()[0].endswith("li") for i in range(370, 380))


def test_dev_devtest_are_nway_and_line_aligned(built):
    out, res = built
    gold = truth()
    assert res.eval_langs == ["deu_Latn", "fra_Latn", "rus_Cyrl", "xho_Latn", "zho_Hans"]
    assert (res.dev_size, res.devtest_size) == (10, 15)
    for split, size in (("dev", 10), ("devtest", 15)):
        eng = lines(layout.eval_file(out, split, "eng_Latn"))
        assert len(eng) == size and len(set(eng)) == size
        for lang in res.eval_langs:
            tgt = lines(layout.eval_file(out, split, lang))
            assert len(tgt) == size
            assert [gold[lang][e] for e in eng] == tgt  # line i is the translation of English line i
    assert not set(lines(layout.eval_file(out, "dev", "eng_Latn"))) & set(
        lines(layout.eval_file(out, "devtest", "eng_Latn"))
    )


def eval_keys(out: Path) -> set[str]:
    return {norm_key(s) for split in ("dev", "devtest") for f in (out / split).glob("*") for s in lines(f)}


def test_train_is_decontaminated(built):
    out, res = built
    keys = eval_keys(out)
    assert len(keys) > 100
    for lang in res.langs:
        for side in ("eng_Latn", lang):
            assert not keys & {norm_key(s) for s in train_side(out, lang, side)}, (lang, side)


def test_mono_hidden_pairs_and_gold(built):
    out, res = built
    gold = truth()
    by_lang = {s.lang: s for s in res.stats}
    keys = eval_keys(out)
    for lang in res.langs:
        prefix = layout.mono_prefix(out, "eng_Latn", lang)
        en, fo = lines(Path(f"{prefix}.eng_Latn")), lines(Path(f"{prefix}.{lang}"))
        pairs = [tuple(map(int, row.split("\t"))) for row in lines(Path(f"{prefix}.gold.tsv"))]
        assert len(pairs) == by_lang[lang].mono > 0
        assert len(en) > len(pairs) and len(fo) > len(pairs)  # distractors on both sides
        hidden = [(en[i], fo[j]) for i, j in pairs]
        assert all(gold[lang][e] == t for e, t in hidden)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        gold_en = {i for i, _ in pairs}
        for i, e in enumerate(en):  # English distractors: not translated into this language
            if i not in gold_en:
                assert e not in gold[lang]
        fo_gold = {j for _, j in pairs}
        en_set = set(en)
        inverse = {t: e for e, t in gold[lang].items()}
        for j, t in enumerate(fo):  # foreign distractors: their English is not in the English file
            if j not in fo_gold:
                assert inverse[t] not in en_set
        train = {norm_key(s) for side in ("eng_Latn", lang) for s in train_side(out, lang, side)}
        assert not train & {norm_key(s) for pair in hidden for s in pair}  # hidden pairs are not in train
        assert not keys & {norm_key(s) for s in en + fo}


def test_stats_tsv_matches_files(built):
    out, res = built
    rows = [r.split("\t") for r in lines(out / "stats.tsv")]
    assert rows[0] == ["lang", "train_pairs", "dev", "devtest", "mono", "tier"]
    sizes = [int(r[1]) for r in rows[1:]]
    assert sizes == sorted(sizes, reverse=True)
    for lang, n, dev, devtest, mono, tier in rows[1:]:
        assert int(n) == len(train_side(out, lang, lang))
        assert int(dev) == len(lines(layout.eval_file(out, "dev", lang)))
        assert int(devtest) == len(lines(layout.eval_file(out, "devtest", lang)))
        assert int(mono) == len(lines(Path(f"{layout.mono_prefix(out, 'eng_Latn', lang)}.gold.tsv")))
        assert tier == tier_of(int(n))
    assert [r[0] for r in rows[1:]] == [s.lang for s in res.stats]


def test_exclude_drops_pairs_with_either_side(built, tree, tmp_path):
    out, _ = built
    en = train_side(out, "deu_Latn", "eng_Latn")[:5]
    de = train_side(out, "fra_Latn", "fra_Latn")[:5]
    protect = tmp_path / "protect.txt"
    protect.write_text("\n".join([e.upper() for e in en] + de) + "\n", encoding="utf-8")
    out2 = tmp_path / "c2"
    res = build_gettext_corpus(config(tree, out2, exclude=[str(protect)]))
    keys = {norm_key(s) for s in lines(protect)}
    assert res.drops["excluded"] >= 10
    for lang in res.langs:
        for side in ("eng_Latn", lang):
            assert not keys & {norm_key(s) for s in train_side(out2, lang, side)}


def test_same_seed_same_bytes_any_worker_count(built, tree, tmp_path):
    out, _ = built
    out2 = tmp_path / "again"
    build_gettext_corpus(config(tree, out2, workers=2))
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out2) for p in out2.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (out2 / rel).read_bytes(), rel


def test_second_run_is_up_to_date_and_changes_rebuild(tree, tmp_path, capsys):
    out = tmp_path / "c"
    first = build_gettext_corpus(config(tree, out))
    t0 = time.monotonic()
    second = build_gettext_corpus(config(tree, out))
    assert second.up_to_date and not first.up_to_date
    assert time.monotonic() - t0 < 2
    assert "up to date" in capsys.readouterr().out
    assert second.stats == first.stats
    # other languages: rebuilt, files of the dropped languages removed
    third = build_gettext_corpus(config(tree, out, langs="deu_Latn,fra_Latn"))
    assert not third.up_to_date and third.langs == ["deu_Latn", "fra_Latn"]
    assert not Path(f"{layout.train_prefix(out, 'eng_Latn', 'rus_Cyrl')}.rus_Cyrl").exists()
    assert not layout.eval_file(out, "dev", "zho_Hans").exists()
    # a changed input file: rebuilt
    mo = tree / "xh" / "LC_MESSAGES" / "app.mo"
    st = mo.stat()
    os.utime(mo, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not build_gettext_corpus(config(tree, out, langs="deu_Latn,fra_Latn")).up_to_date


def test_uncoverable_language_is_left_out_not_padded(tree, tmp_path):
    out = tmp_path / "c"
    res = build_gettext_corpus(config(tree, out, dev_size=50, devtest_size=70))  # xh covers 110 < 120
    assert "xho_Latn" in res.not_in_eval and "xho_Latn" not in res.eval_langs
    assert not layout.eval_file(out, "dev", "xho_Latn").exists()
    assert (res.dev_size, res.devtest_size) == (50, 70)
    n = {len(lines(layout.eval_file(out, "dev", lang))) for lang in ["eng_Latn", *res.eval_langs]}
    assert n == {50}


def test_cli(tree, tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "build",
        "gettext",
        "--out",
        str(out),
        "--locale-dir",
        str(tree),
        "--dev-size",
        "5",
        "--devtest-size",
        "5",
        "--min-pairs",
        "20",
        "--no-progress",
        "--workers",
        "1",
    ]
    assert data_main(args) == 0
    printed = capsys.readouterr().out
    assert "train_pairs" in printed and "min_words" in printed and "deu_Latn" in printed
    assert len(lines(layout.eval_file(out, "dev", "eng_Latn"))) == 5
    with pytest.raises(SystemExit) as exc:
        data_main(args + ["--langs", "amh_Ethi"])
    assert exc.value.code == 2
    assert "amh_Ethi" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data_main(["build", "gettext", "--help"])
    assert "--exclude" in capsys.readouterr().out


def test_demo_langs_are_a_sensible_set():
    assert 8 <= len(DEMO_LANGS) <= 12 and len(set(DEMO_LANGS)) == len(DEMO_LANGS)
    assert all(c in FLORES200_CODES for c in DEMO_LANGS)
    assert len({script_of(c) for c in DEMO_LANGS}) >= 4


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/locale/de/LC_MESSAGES").is_dir(), reason="needs /usr/share/locale")
def test_real_demo_build_covers_every_demo_language(tmp_path):
    res = build_gettext_corpus(GettextConfig(out=str(tmp_path / "demo"), langs="demo", progress=False))
    assert sorted(res.eval_langs) == sorted(DEMO_LANGS)
    assert res.dev_size >= 200 and res.devtest_size >= 300
    tiers = {s.tier for s in res.stats}
    assert tiers == {"high", "mid", "low"}


def test_sentences_in_another_script_move_to_the_sibling_code(tmp_path):
    """``tt`` (Tatar, Cyrillic) also ships Latin-script catalogues: those pairs belong to tat_Latn."""
    root = tmp_path / "locale"
    latin = lambda w: w[::-1] + "lar"  # noqa: E731
    cyr = lambda w: "".join(CYR[c] for c in w) + "лар"  # noqa: E731
    tr = lambda fn, i: " ".join(fn(w.lower()) for w in english(i).split())  # noqa: E731
    write_mo(root / "tt" / "LC_MESSAGES" / "iso.mo", [(english(i), tr(cyr, i)) for i in range(0, 40)])
    write_mo(root / "tt" / "LC_MESSAGES" / "gtk.mo", [(english(i), tr(latin, i)) for i in range(40, 70)])
    write_mo(root / "tt@iqtelif" / "LC_MESSAGES" / "gtk.mo", [(english(i), tr(latin, i)) for i in range(60, 90)])
    res = build_gettext_corpus(config(root, tmp_path / "c", min_pairs=10, dev_size=2, devtest_size=2, mono_size=0))
    assert res.langs == ["tat_Cyrl", "tat_Latn"]
    out = tmp_path / "c"
    cyr_side = train_side(out, "tat_Cyrl", "tat_Cyrl")
    lat_side = train_side(out, "tat_Latn", "tat_Latn")
    assert cyr_side and all(_script(s) == "Cyrl" for s in cyr_side)
    assert all(_script(s) == "Latn" for s in lat_side)
    assert len(lat_side) >= 45  # 30 moved from tt + 30 of tt@iqtelif, minus overlap and eval lines


def _script(text: str) -> str:
    return script_counts(text).most_common(1)[0][0]
