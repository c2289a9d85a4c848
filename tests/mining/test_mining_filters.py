import json

import numpy as np
import pytest

from mining.cli import filter_main
from mining.filters import (
    DUPLICATE,
    EMPTY,
    IDENTICAL,
    LENGTH_RATIO,
    NEAR_DUPLICATE,
    SCRIPT,
    TOO_LONG,
    TOO_SHORT,
    FilterConfig,
    FilterJob,
    FilterReport,
    HashSet64,
    check_identical,
    check_length,
    check_ratio,
    check_script,
    filter_bitext,
    filter_lines,
    hash64,
    near_dup_key,
    normalize_punct,
    normalize_text,
    run_filter,
)
from mt.common.errors import UserError
from mt.common.scripts import dominant_script, han_variant, script_fraction, script_units, text_width


def test_normalisation():
    assert normalize_text("Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３") == "Fullwidth ABC123"  # NFKC
    assert normalize_punct("\u201eHallo\u201c \u2013 sagte er \u2019s") == '"Hallo" - sagte er \'s'
    assert normalize_text("Wait , what ?  ( yes )") == "Wait, what? (yes)"
    assert normalize_text("a\u00a0b\u200bc\td\n") == "a bc d"  # no-break space, zero-width, tabs
    assert normalize_text("«Bonjour»") == '"Bonjour"'
    assert normalize_text("Ｈｅｌｌｏ", nfkc=False) == "Ｈｅｌｌｏ"


def test_length_and_ratio_filters():
    assert check_length("abc", min_chars=5) == TOO_SHORT
    assert check_length("a" * 20, max_chars=10) == TOO_LONG
    assert check_length("one two", min_words=3) == TOO_SHORT
    assert check_length("one two three four", max_words=3) == TOO_LONG
    assert check_length("one two three", min_chars=5, max_chars=100, min_words=2, max_words=5) is None
    assert check_length("x" * 5000) is None  # 0 disables the bounds
    assert check_ratio("short", "a much much longer sentence here", 3.0) == LENGTH_RATIO
    assert check_ratio("similar length", "longueur similaire", 3.0) is None
    assert check_ratio("x", "y" * 100, 0) is None


def test_script_filter_uses_the_code_script():
    assert check_script("Das ist ein Satz.", "deu_Latn", 0.5) is None
    assert check_script("Это предложение.", "deu_Latn", 0.5) == SCRIPT
    assert check_script("Это предложение.", "rus_Cyrl", 0.5) is None
    assert check_script("これはペンです。", "jpn_Jpan", 0.5) is None  # kana + han
    assert check_script("መልካም ቀን", "amh_Ethi", 0.5) is None
    assert check_script("नमस्ते दुनिया", "hin_Deva", 0.9) is None  # vowel signs (marks) count as Devanagari
    assert check_script("12345 !!!", "deu_Latn", 0.5) == SCRIPT  # no letters at all
    assert check_script("這個問題很難", "zho_Hans", 0.5) == SCRIPT  # clearly traditional
    assert check_script("这个问题很难", "zho_Hans", 0.5) is None
    assert check_script("Это", "deu_Latn", 0) is None
    assert script_fraction("Hello Мир", "Latn") == pytest.approx(1 / 2)  # a word each, whatever their lengths
    assert dominant_script("ᐃᓄᒃᑎᑐᑦ") == "Cans" and han_variant("abc") is None


def test_script_check_counts_cjk_characters_like_words():
    """A Han, kana or Hangul character weighs as much as a Latin word, so Chinese with Latin product names
    stays Chinese, and a Latin-only line declared Chinese still fails; scripts without spaces likewise."""
    zh = "使用 GNOME 桌面的 Nautilus 文件管理器"  # 10 Han characters, 13 Latin letters, 2 Latin words
    assert check_script(zh, "zho_Hans", 0.5) is None  # even at the old default
    assert check_script(zh, "zho_Hans", FilterConfig().min_script_fraction) is None
    assert script_units(zh) == {"Hani": 10, "Latn": 2}
    assert check_script("Use the GNOME desktop's Nautilus file manager", "zho_Hans", 0.5) == SCRIPT
    assert check_script("Use the GNOME Nautilus file manager 文件", "zho_Hans", 0.5) == SCRIPT  # 2 of 8
    assert check_script("GNOME ファイル マネージャ", "jpn_Jpan", 0.5) is None
    assert check_script("GNOME 파일 관리자", "kor_Hang", 0.5) is None
    for lang, text in (
        ("tha_Thai", "เปิดไฟล์ด้วย GNOME Files"),
        ("khm_Khmr", "បើកឯកសារ GNOME Files"),
        ("mya_Mymr", "ဖိုင်ကိုဖွင့်ပါ GNOME Files"),
    ):
        assert check_script(text, lang, 0.5) is None, lang  # a clause without spaces is not one word
        assert check_script("Open the file with GNOME Files", lang, 0.25) == SCRIPT, lang
    # alphabetic scripts: words, so a Russian line with two Latin names is half Cyrillic
    assert check_script("Открыть в GNOME Files", "rus_Cyrl", 0.5) is None
    # the length bound counts a wide character twice: a 3-character Chinese sentence is not too short
    assert check_length("打开文件", min_chars=5) is None and check_length("Open", min_chars=5) == TOO_SHORT
    assert text_width("缺纸 ok") == 7


def test_near_dup_key_and_identical():
    assert near_dup_key("Hello, World! 2023") == near_dup_key("hello world 1999")
    assert near_dup_key("Hello world") != near_dup_key("Hello word")
    assert check_identical("Save file", "save file!") == IDENTICAL
    assert check_identical("Save file", "Datei speichern") is None
    assert hash64("abc") == hash64("abc") != hash64("abd")


def test_hashset_matches_a_python_set_and_stays_bounded():
    rng = np.random.default_rng(0)
    hs, ref = HashSet64(max_bytes=1 << 24, initial=1 << 10), set()
    for _ in range(20):
        batch = rng.integers(0, 20000, size=3000).astype(np.uint64)  # repeats inside and across batches, and 0
        expected = []
        for x in batch.tolist():
            x = x or 1
            expected.append(x in ref)
            ref.add(x)
        assert hs.add(batch).tolist() == expected
    assert len(hs) == len(ref) and not hs.saturated
    small = HashSet64(max_bytes=8 * 1024)  # 1024 slots: at most 512 entries
    seen = small.add(np.arange(1, 3001, dtype=np.uint64))
    assert small.saturated and len(small) == 512 and not seen.any()
    again = small.add(np.arange(1, 3001, dtype=np.uint64))
    assert again[:512].all() and not again[512:].any()  # the first lines are remembered, memory is not exceeded
    assert small.table.nbytes == 8 * 1024


def test_filter_lines_reasons_in_order():
    lines = [
        "A perfectly fine German-free sentence.",  # kept
        "",  # empty
        "tiny",  # too short
        "x" * 2000,  # too long
        "Это русский текст, а не английский.",  # script
        "A perfectly fine German-free sentence.",  # exact duplicate
        "a PERFECTLY fine german-free sentence!!",  # near duplicate
        "Version 2 is out now.",  # kept
        "Version 3 is out now.",  # kept: another number is another sentence (to mine: another translation)
        "version 3 is out now",
    ]  # near duplicate of the line before
    report = FilterReport()
    out = list(filter_lines(lines, "eng_Latn", FilterConfig(), report))
    assert [r for _, r in out] == [
        None,
        EMPTY,
        TOO_SHORT,
        TOO_LONG,
        SCRIPT,
        DUPLICATE,
        NEAR_DUPLICATE,
        None,
        None,
        NEAR_DUPLICATE,
    ]
    assert report.total == 10 and report.kept == 3
    assert report.dropped == {EMPTY: 1, TOO_SHORT: 1, TOO_LONG: 1, SCRIPT: 1, DUPLICATE: 1, NEAR_DUPLICATE: 2}
    assert sum(report.dropped.values()) + report.kept == report.total
    # switching a filter off changes only its own count
    report2 = FilterReport()
    list(filter_lines(lines, "eng_Latn", FilterConfig(near_dedup=False, min_script_fraction=0), report2))
    assert NEAR_DUPLICATE not in report2.dropped and SCRIPT not in report2.dropped and report2.kept == 6
    # bitext near-duplicates still fold digits (the pair "Page 1 / Seite 1" repeats "Page 2 / Seite 2")
    pairs = [
        ("Go to page 1 of the manual", "Gehe zu Seite 1 des Handbuchs"),
        ("Go to page 2 of the manual", "Gehe zu Seite 2 des Handbuchs"),
    ]
    assert [r for *_, r in filter_bitext(pairs, "eng_Latn", "deu_Latn")] == [None, NEAR_DUPLICATE]


def test_dedup_spans_chunks():
    lines = [f"sentence number {chr(97 + i % 26)}{i // 26}" for i in range(100)] * 3
    report = FilterReport()
    cfg = FilterConfig(batch_size=7, near_dedup=False)
    kept = [t for t, r in filter_lines(lines, "eng_Latn", cfg, report) if r is None]
    assert kept == lines[:100] and report.dropped == {DUPLICATE: 200}


def test_filter_bitext():
    pairs = [
        ("Save the file before closing.", "Speichern Sie die Datei vor dem Schließen."),  # kept
        ("Save the file before closing.", "Speichern Sie die Datei vor dem Schließen."),  # duplicate
        ("Open", "Öffnen Sie die Datei, bevor Sie sie bearbeiten, sonst geht alles verloren."),  # too short
        ("Open the file now.", "Öffnen Sie die Datei jetzt, bevor alle Änderungen verloren gehen, bitte!"),
        ("Print the document.", "Print the document!"),  # identical
        ("Print the document.", "Распечатать документ."),  # target script
        ("Close the window.", "Schließen Sie das Fenster."),
    ]  # kept
    report = FilterReport()
    out = list(filter_bitext(pairs, "eng_Latn", "deu_Latn", FilterConfig(max_len_ratio=3.0), report))
    assert [r for *_, r in out] == [None, DUPLICATE, TOO_SHORT, LENGTH_RATIO, IDENTICAL, SCRIPT, None]
    assert report.kept == 2


def test_cli_bitext_with_scores_report_and_bad_rows(tmp_path, capsys):
    inp = tmp_path / "mined.tsv"
    inp.write_text(
        "1.25\tSave the file.\tDatei speichern.\n"
        "1.20\tSave the file.\tDatei speichern.\n"
        "broken row without tabs\n"
        "1.10\tClose the window.\tFenster schließen.\n",
        encoding="utf-8",
    )
    out, rep = tmp_path / "clean.tsv", tmp_path / "report.json"
    assert (
        filter_main(
            [
                "--src-lang",
                "eng_Latn",
                "--tgt-lang",
                "deu_Latn",
                "--input",
                str(inp),
                "--output",
                str(out),
                "--report",
                str(rep),
                "--no-progress-bar",
            ]
        )
        == 0
    )
    assert out.read_text(encoding="utf-8").splitlines() == [
        "1.25\tSave the file.\tDatei speichern.",
        "1.10\tClose the window.\tFenster schließen.",
    ]
    r = json.loads(rep.read_text())
    assert r == {"total": 4, "kept": 2, "dropped": {"bad_columns": 1, "duplicate": 1}, "dedup_saturated": False}
    err = capsys.readouterr().err
    assert "1 line(s) with the wrong number of columns dropped (lines 3)" in err and "duplicate" in err


def test_cli_monolingual_tsv_report_and_dropped(tmp_path):
    inp = tmp_path / "de.txt"
    inp.write_text("Das ist gut.\nDas ist gut.\nkurz\nЭто не немецкий.\n", encoding="utf-8")
    out, rep, dropped = tmp_path / "o.txt", tmp_path / "r.tsv", tmp_path / "d.tsv"
    run_filter(
        FilterJob(
            input=str(inp), output=str(out), lang="deu_Latn", report=str(rep), dropped=str(dropped), progress=False
        )
    )
    assert out.read_text(encoding="utf-8") == "Das ist gut.\n"
    assert rep.read_text().splitlines() == ["input\t4", "too_short\t1", "script\t1", "duplicate\t1", "kept\t1"]
    assert [line.split("\t")[0] for line in dropped.read_text(encoding="utf-8").splitlines()] == [
        "duplicate",
        "too_short",
        "script",
    ]


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="pass --lang"):
        run_filter(FilterJob(input="x", output=None, lang="deu_Latn", src_lang="eng_Latn"))
    with pytest.raises(UserError, match="input file not found"):
        run_filter(FilterJob(input=str(tmp_path / "nope.txt"), output=None, lang="deu_Latn"))
    one = tmp_path / "one.tsv"
    one.write_text("only one column\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"one.tsv:1: expected src<TAB>tgt"):
        run_filter(
            FilterJob(
                input=str(one), output=str(tmp_path / "o"), src_lang="eng_Latn", tgt_lang="deu_Latn", progress=False
            )
        )
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok line\nd\xe9j\xe0 vu\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt:2: not valid UTF-8"):
        run_filter(FilterJob(input=str(latin1), output=str(tmp_path / "o"), lang="fra_Latn", progress=False))
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_line_numbers_monolingual_and_chained(tmp_path):
    inp = tmp_path / "de.txt"
    lines = ["Das ist gut.", "Das ist gut.", "kurz", "Это не немецкий.", "Ein anderer Satz hier.", "", "Noch einer."]
    inp.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    # the input is itself a subset: its line k was line 10 * k of some original file
    (tmp_path / "in.lines").write_text("".join(f"{10 * k}\n" for k in range(len(lines))))
    cfg = FilterConfig(batch_size=2)  # results cross chunk boundaries
    run_filter(
        FilterJob(
            input=str(inp),
            output=str(tmp_path / "o.txt"),
            lang="deu_Latn",
            progress=False,
            line_numbers=str(tmp_path / "o.lines"),
            config=cfg,
        )
    )
    kept = (tmp_path / "o.txt").read_text(encoding="utf-8").splitlines()
    nums = [int(x) for x in (tmp_path / "o.lines").read_text().split()]
    assert kept == ["Das ist gut.", "Ein anderer Satz hier.", "Noch einer."] and nums == [0, 4, 6]
    assert [lines[n] for n in nums] == kept
    run_filter(
        FilterJob(
            input=str(inp),
            output=str(tmp_path / "o2.txt"),
            lang="deu_Latn",
            progress=False,
            input_line_numbers=str(tmp_path / "in.lines"),
            line_numbers=str(tmp_path / "o2.lines"),
            config=cfg,
        )
    )
    assert (tmp_path / "o2.lines").read_text().split() == ["0", "40", "60"]


def test_line_numbers_bitext_count_bad_rows(tmp_path):
    inp = tmp_path / "b.tsv"
    inp.write_text(
        "Save the file.\tDatei speichern.\n"
        "broken row\n"
        "Save the file.\tDatei speichern.\n"
        "Close the window.\tFenster schließen.\n",
        encoding="utf-8",
    )
    assert (
        filter_main(
            [
                "--src-lang",
                "eng_Latn",
                "--tgt-lang",
                "deu_Latn",
                "--input",
                str(inp),
                "--output",
                str(tmp_path / "o.tsv"),
                "--line-numbers",
                str(tmp_path / "o.lines"),
                "--no-progress-bar",
            ]
        )
        == 0
    )
    assert len((tmp_path / "o.tsv").read_text(encoding="utf-8").splitlines()) == 2
    assert (tmp_path / "o.lines").read_text().split() == ["0", "3"]


def test_chunks_keep_order_and_the_short_tail():
    from mt.common.textio import chunks

    assert list(chunks(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == [] and list(chunks("ab", 5)) == [["a", "b"]]
