import json

import pytest

from mining.cli import lid_main
from mining.lid import (
    LID176_TO_FLORES,
    LanguageIdentifier,
    LidConfig,
    filter_lang,
    lid_decision,
    read_thresholds,
    run_lid,
)
from mt.common.errors import UserError
from mt.common.langs import FLORES200_CODES, is_code

REAL = {
    "deu_Latn": [
        "Die Datei konnte nicht gespeichert werden, weil der Datenträger voll ist.",
        "Bitte geben Sie Ihr Passwort erneut ein, um fortzufahren.",
    ],
    "fra_Latn": [
        "Impossible d'ouvrir le fichier car il est utilisé par un autre programme.",
        "Voulez-vous enregistrer les modifications avant de fermer la fenêtre ?",
    ],
    "eng_Latn": [
        "The file could not be saved because the disk is full.",
        "Please enter your password again to continue.",
    ],
    "rus_Cyrl": [
        "Не удалось сохранить файл, так как диск переполнен.",
        "Пожалуйста, введите пароль ещё раз, чтобы продолжить.",
    ],
    "spa_Latn": [
        "No se pudo guardar el archivo porque el disco está lleno.",
        "Por favor, introduzca de nuevo su contraseña para continuar.",
    ],
    "jpn_Jpan": ["ディスクがいっぱいのため、ファイルを保存できませんでした。"],
    "zho_Hans": ["由于磁盘已满，无法保存文件。请再次输入您的密码以继续。"],
    "zho_Hant": ["由於磁碟已滿，無法儲存檔案。請再次輸入您的密碼以繼續。"],
    "srp_Cyrl": ["Датотека није могла бити сачувана јер је диск пун."],
    "ell_Grek": ["Δεν ήταν δυνατή η αποθήκευση του αρχείου επειδή ο δίσκος είναι γεμάτος."],
    "heb_Hebr": ["לא ניתן היה לשמור את הקובץ מכיוון שהדיסק מלא."],
}


@pytest.fixture(scope="module")
def lid():
    return LanguageIdentifier()


def test_predicts_flores_codes_on_real_sentences(lid):
    lines = [s for sents in REAL.values() for s in sents]
    gold = [code for code, sents in REAL.items() for _ in sents]
    preds = lid.predict(lines)
    assert [c for c, _ in preds] == gold
    assert all(0.5 < p <= 1.0 for _, p in preds)


def test_label_table_covers_the_model_and_gives_codes(lid):
    assert set(lid.labels) == set(LID176_TO_FLORES)  # all 176 lid.176 labels are mapped
    for codes in LID176_TO_FLORES.values():
        assert all(is_code(c) for c in codes)
    # FLORES-200 languages keep FLORES' choice of macrolanguage member
    assert LID176_TO_FLORES["ar"] == ("arb_Arab",) and LID176_TO_FLORES["fa"] == ("pes_Arab",)
    assert LID176_TO_FLORES["sq"][0] in FLORES200_CODES and LID176_TO_FLORES["als"] == ("gsw_Latn",)


def test_script_picks_the_variant():
    assert LanguageIdentifier.to_flores("sr", "Ovo je rečenica na srpskom.") == "srp_Latn"
    assert LanguageIdentifier.to_flores("sr", "Ово је реченица.") == "srp_Cyrl"
    assert LanguageIdentifier.to_flores("zh", "這個問題") == "zho_Hant"
    assert LanguageIdentifier.to_flores("zh", "这个问题") == "zho_Hans"
    assert LanguageIdentifier.to_flores("eng_Latn", "whatever") == "eng_Latn"  # lid218e labels pass through
    assert LanguageIdentifier.to_flores("xyz", "Привет") == "xyz_Cyrl"  # unknown label of a custom model


def test_han_variant_is_decided_by_the_han_characters():
    # Latin words dominate these lines; the Han characters are traditional / simplified
    hant = "請選擇 GNOME Files Nautilus Extension Manager"
    hans = "请选择 GNOME Files Nautilus Extension Manager"
    assert LanguageIdentifier.to_flores("zh", hant) == "zho_Hant"
    assert LanguageIdentifier.to_flores("zh", hans) == "zho_Hans"
    # nothing tells the variants apart: the declared language when it is one of them, else the first
    assert LanguageIdentifier.to_flores("zh", "文件 GNOME", prefer="zho_Hant") == "zho_Hant"
    assert LanguageIdentifier.to_flores("zh", "文件 GNOME") == "zho_Hans"
    assert LanguageIdentifier.to_flores("sr", "Ово је GNOME Files", prefer="srp_Latn") == "srp_Latn"  # 2 vs 2: tie
    assert LanguageIdentifier.to_flores("sr", "Ово је реченица GNOME") == "srp_Cyrl"


def test_lid_decision_rules():
    assert lid_decision({"deu_Latn": 0.9, "nld_Latn": 0.05}, "deu_Latn") == (None, None)
    assert lid_decision({"deu_Latn": 0.3, "nld_Latn": 0.2}, "deu_Latn") == (None, None)  # unsure: kept
    assert lid_decision({"deu_Latn": 0.1, "nld_Latn": 0.8}, "deu_Latn") == ("other_language", "nld_Latn")
    assert lid_decision({"deu_Latn": 0.1, "nld_Latn": 0.8}, "deu_Latn", reject=0.9) == (None, None)
    assert lid_decision({"deu_Latn": 0.4, "nld_Latn": 0.3}, "deu_Latn", threshold=0.7, reject=0.0) == (
        "below_threshold",
        None,
    )
    assert lid_decision({}, "deu_Latn") == (None, None)  # no language the script allows: the script check decides


def test_keep_mode_counts_only_languages_the_script_allows(lid):
    """Short technical English lid.176 gives to Kannada/Tamil, and kana-less Chinese it gives to Japanese,
    are kept; text in another language is still dropped."""
    english = ["invalid namespace list", "show tar defaults", "Must specify value for restart-interval option"]
    chinese = ["使用 GNOME 桌面的 Nautilus 文件管理器", "[排序过的符号表]", "Qt Designer 界面文档"]
    others = REAL["deu_Latn"] + REAL["rus_Cyrl"]
    kept = [line for line, r in filter_lang(english + others, lid, "eng_Latn") if r is None]
    assert kept == english
    kept = [
        line
        for line, r in filter_lang(chinese + REAL["jpn_Jpan"] + REAL["eng_Latn"] + REAL["zho_Hant"], lid, "zho_Hans")
        if r is None
    ]
    assert kept == chinese
    assert "jpn_Jpan" not in lid.allowed_probs(chinese[1])  # no kana: not Japanese
    # a mixed line of Traditional characters and Latin words: kept as zho_Hant, dropped as zho_Hans
    mixed = ["請選擇 GNOME Files 的 Nautilus 擴充功能", "這個檔案 GNOME Files Nautilus Extension Manager"]
    assert [r for _, r in filter_lang(mixed, lid, "zho_Hant")] == [None, None]
    assert [r for _, r in filter_lang(mixed, lid, "zho_Hans")] == ["other_language", "other_language"]
    assert set(lid.allowed_probs("สวัสดีครับ ยินดีต้อนรับ")) == {"tha_Thai"}  # the script decides alone


def test_blank_lines_are_undetermined(lid):
    assert lid.predict(["", "   ", "Bonjour tout le monde, comment allez-vous ?"])[:2] == [("und", 0.0), ("und", 0.0)]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_keep_mode_counts_and_output(tmp_path, capsys):
    lines = REAL["deu_Latn"] + REAL["fra_Latn"] + [""] + REAL["rus_Cyrl"]
    inp = _write(tmp_path / "in.txt", lines)
    out = tmp_path / "out.txt"
    report = run_lid(
        LidConfig(
            input=str(inp),
            output=str(out),
            lang="deu_Latn",
            report=str(tmp_path / "r.json"),
            dropped=str(tmp_path / "dropped.tsv"),
            progress=False,
        )
    )
    assert out.read_text(encoding="utf-8").splitlines() == REAL["deu_Latn"]
    assert report.kept == 2 and report.total == len(lines)
    assert report.dropped == {"other_language": 4, "empty": 1}
    assert report.dropped_langs == {"fra_Latn": 2, "rus_Cyrl": 2}
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["kept"] == 2 and rep["dropped"]["other_language"] == 4
    dropped = (tmp_path / "dropped.tsv").read_text(encoding="utf-8").splitlines()
    assert len(dropped) == 5 and dropped[0].startswith("other_language\t")
    assert "kept 2 of 7 lines" in capsys.readouterr().err


def test_thresholds_per_language(tmp_path):
    # a short ambiguous line gets a lower share than full sentences; --reject-threshold 0: the threshold alone decides
    lines = REAL["eng_Latn"] + ["ok"]
    inp = _write(tmp_path / "in.txt", lines)
    lid = LanguageIdentifier()
    shares = []
    for line in lines:
        probs = lid.allowed_probs(line, "eng_Latn")
        shares.append(probs.get("eng_Latn", 0.0) / sum(probs.values()))
    cut = (min(shares[:2]) + shares[2]) / 2 if shares[2] < min(shares[:2]) else None
    thr = _write(tmp_path / "thr.tsv", ["# lang\tthreshold", "eng_Latn\t0.999999", "deu_Latn\t0.2"])
    table = read_thresholds(thr)
    assert table == {"eng_Latn": 0.999999, "deu_Latn": 0.2}
    strict = run_lid(
        LidConfig(
            input=str(inp),
            output=str(tmp_path / "a"),
            lang="eng_Latn",
            thresholds=str(thr),
            threshold=0.0,
            reject_threshold=0.0,
            progress=False,
        )
    )
    assert strict.kept < len(lines)  # per-language 0.999999 beats --threshold 0
    loose = run_lid(
        LidConfig(
            input=str(inp),
            output=str(tmp_path / "b"),
            lang="eng_Latn",
            threshold=0.0,
            reject_threshold=0.0,
            progress=False,
        )
    )
    assert loose.kept == len(lines)
    if cut is not None:
        mid = run_lid(
            LidConfig(
                input=str(inp),
                output=str(tmp_path / "c"),
                lang="eng_Latn",
                threshold=cut,
                reject_threshold=0.0,
                progress=False,
            )
        )
        assert (tmp_path / "c").read_text().splitlines() == REAL["eng_Latn"]
        assert mid.kept == 2
    # by default an unsure LID keeps the short line: no other language reaches --reject-threshold
    default = run_lid(LidConfig(input=str(inp), output=str(tmp_path / "d"), lang="eng_Latn", progress=False))
    assert default.kept == len(lines)


def test_bad_thresholds_file(tmp_path):
    with pytest.raises(UserError, match=r"thr.tsv:2: unknown language code 'german'"):
        read_thresholds(_write(tmp_path / "thr.tsv", ["deu_Latn\t0.5", "german\t0.5"]))
    with pytest.raises(UserError, match=r":1: threshold 'high' is not a number"):
        read_thresholds(_write(tmp_path / "thr.tsv", ["deu_Latn\thigh"]))
    with pytest.raises(UserError, match="outside"):
        read_thresholds(_write(tmp_path / "thr.tsv", ["deu_Latn\t1.5"]))


def test_annotate_mode_via_cli(tmp_path):
    inp = _write(tmp_path / "in.txt", REAL["spa_Latn"] + REAL["ell_Grek"])
    out = tmp_path / "ann.tsv"
    assert lid_main(["--annotate", "--input", str(inp), "--output", str(out), "--no-progress-bar"]) == 0
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r[0] for r in rows] == ["spa_Latn", "spa_Latn", "ell_Grek"]
    assert [r[2] for r in rows] == REAL["spa_Latn"] + REAL["ell_Grek"]
    assert all(0.0 < float(r[1]) <= 1.0 for r in rows)


def test_clear_errors(tmp_path, capsys):
    inp = _write(tmp_path / "in.txt", REAL["deu_Latn"])
    with pytest.raises(SystemExit) as e:
        lid_main(["--lang", "deu_Latn", "--input", str(tmp_path / "missing.txt")])
    assert e.value.code == 2 and "missing.txt: input file not found" in capsys.readouterr().err
    with pytest.raises(UserError, match="cannot predict wol_Latn"):
        run_lid(LidConfig(input=str(inp), lang="wol_Latn", progress=False))
    with pytest.raises(UserError, match="LID model not found"):
        run_lid(LidConfig(input=str(inp), lang="deu_Latn", lid_model=str(tmp_path / "lid218e.bin"), progress=False))
    with pytest.raises(UserError, match="unknown language code"):
        run_lid(LidConfig(input=str(inp), lang="german", progress=False))
    (tmp_path / "bad.bin").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a fastText model"):
        LanguageIdentifier(tmp_path / "bad.bin")


def test_line_numbers_follow_kept_lines_through_two_runs(tmp_path):
    """--line-numbers writes each kept line's 0-based line in the original; --input-line-numbers chains."""
    lines = REAL["fra_Latn"] + REAL["deu_Latn"] + [""] + REAL["eng_Latn"] + REAL["rus_Cyrl"]
    inp = _write(tmp_path / "in.txt", lines)
    # first pass: a language lid.176 cannot predict, passed through (--keep-uncovered): every line kept
    first = tmp_path / "all.txt"
    run_lid(
        LidConfig(
            input=str(inp),
            output=str(first),
            lang="nso_Latn",
            keep_uncovered=True,
            line_numbers=str(tmp_path / "all.lines"),
            progress=False,
        )
    )
    assert first.read_text(encoding="utf-8").splitlines() == lines
    assert (tmp_path / "all.lines").read_text().split() == [str(i) for i in range(len(lines))]
    # second pass: German only; the numbers are those of in.txt
    out = tmp_path / "de.txt"
    assert (
        lid_main(
            [
                "--lang",
                "deu_Latn",
                "--input",
                str(first),
                "--output",
                str(out),
                "--no-progress-bar",
                "--input-line-numbers",
                str(tmp_path / "all.lines"),
                "--line-numbers",
                str(tmp_path / "de.lines"),
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    nums = [int(x) for x in (tmp_path / "de.lines").read_text().split()]
    assert out.read_text(encoding="utf-8").splitlines() == REAL["deu_Latn"]
    assert [lines[i] for i in nums] == REAL["deu_Latn"] and nums == [2, 3]


def test_uncovered_language_and_line_number_errors(tmp_path, capsys):
    inp = _write(tmp_path / "in.txt", REAL["deu_Latn"])
    report = run_lid(
        LidConfig(input=str(inp), output=str(tmp_path / "o"), lang="xho_Latn", keep_uncovered=True, progress=False)
    )
    assert report.kept == report.total == 2 and "cannot predict xho_Latn: keeping every line" in capsys.readouterr().err
    _write(tmp_path / "short.lines", ["7"])
    with pytest.raises(UserError, match="short.lines: only 1 line numbers for a longer input"):
        run_lid(
            LidConfig(
                input=str(inp),
                output=str(tmp_path / "o"),
                lang="deu_Latn",
                progress=False,
                input_line_numbers=str(tmp_path / "short.lines"),
            )
        )
    _write(tmp_path / "long.lines", ["7", "8", "9"])
    with pytest.raises(UserError, match="more line numbers than input lines"):
        run_lid(
            LidConfig(
                input=str(inp),
                output=str(tmp_path / "o"),
                lang="deu_Latn",
                progress=False,
                input_line_numbers=str(tmp_path / "long.lines"),
            )
        )
    _write(tmp_path / "bad.lines", ["7", "x"])
    with pytest.raises(UserError, match=r"bad.lines:2: expected a line number"):
        run_lid(
            LidConfig(
                input=str(inp),
                output=str(tmp_path / "o"),
                lang="deu_Latn",
                progress=False,
                input_line_numbers=str(tmp_path / "bad.lines"),
            )
        )
    with pytest.raises(UserError, match="go with --lang"):
        run_lid(LidConfig(input=str(inp), annotate=True, line_numbers=str(tmp_path / "n"), progress=False))
