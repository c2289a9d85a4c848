import pytest

from mt.common.scripts import script_counts
from mt.data.clean import (
    REASONS,
    CleanConfig,
    clean_pair,
    count_words,
    has_markup,
    has_path_url_email,
    is_mostly_placeholders,
    is_untranslated,
    norm_key,
    normalize_ws,
    script_mismatch,
    strip_accelerators,
)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("_File", "File"),
        ("&File", "File"),
        ("Save _As…", "Save As…"),
        ("O_pen", "Open"),
        ("Ö&ffnen", "Öffnen"),
        ("ファイル(_F)", "ファイル"),
        ("打开(&O)...", "打开..."),
        ("파일 열기(_O)", "파일 열기"),
    ],
)
def test_accelerators_are_stripped(raw, clean):
    assert strip_accelerators(raw) == clean


@pytest.mark.parametrize(
    "text", ["file_name is a snake_case word", "MAX_SIZE", "AT&T and R&D", "Tom &amp; Jerry", "__init__", "a & b"]
)
def test_not_accelerators_are_kept(text):
    assert strip_accelerators(text) == text


def test_whitespace_and_control_characters():
    assert normalize_ws("  Line one\n\tline\u00a0two  \x07") == "Line one line two"
    assert "\n" not in normalize_ws("a\nb") and "\t" not in normalize_ws("a\tb")
    assert normalize_ws("مقدار دسترسی\u200cپذیری") == "مقدار دسترسی\u200cپذیری"  # ZWNJ is text, kept


def test_norm_key_casefolds_and_collapses():
    assert norm_key("  Open   FILE\n") == norm_key("open file") == "open file"
    assert norm_key("Straße") == norm_key("STRASSE")


@pytest.mark.parametrize(
    "text, mostly",
    [
        ("%s: %s", True),
        ("%a %b %e %H:%M:%S %Z %Y", True),
        ("%(name)s of {0}", True),
        ("%1$d of %2$s", True),
        ("{} {}", True),
        ("Could not open %s: %s", False),
        ("Could not open the file {filename}", False),
        ("Use $HOME as the directory", False),
        ("50% off the price", False),
    ],
)
def test_placeholders(text, mostly):
    assert is_mostly_placeholders(text) is mostly


def test_placeholders_do_not_count_as_words():
    assert count_words("%s %d {0} %(x)s words") == 1
    assert count_words("Save the file now") == 4
    assert count_words("- * 12 --") == 0


@pytest.mark.parametrize("text", ["<b>Bold</b> text", "Click <a href='x'>here</a>", "Tom &amp; Jerry", "<br/>"])
def test_markup(text):
    assert has_markup(text)


def test_no_markup():
    assert not has_markup("a < b and c > d")


@pytest.mark.parametrize(
    "text",
    [
        "See https://example.org for more",
        "www.gnu.org",
        "Mail bug-x@gnu.org now",
        "Cannot open /usr/share/foo/bar",
        "Edit ~/.config/app/rc",
        "Run ./configure/x",
        "C:\\Windows",
    ],
)
def test_paths_urls_emails(text):
    assert has_path_url_email(text)


@pytest.mark.parametrize("text", ["read and/or write", "TCP/IP input/output", "5/10 done", "the @ sign"])
def test_not_paths(text):
    assert not has_path_url_email(text)


def test_untranslated():
    assert is_untranslated("Open the file", "open  the FILE")
    assert is_untranslated("GNOME Shell Extensions", "GNOME Shell")  # only English words copied
    assert not is_untranslated("Open the file", "Datei öffnen")
    assert not is_untranslated("MDI file error", "Ошибка MDI")


def test_script_counts_and_mismatch():
    assert script_counts("Ошибка MDI")["Cyrl"] == 6
    assert script_mismatch("Ошибка MDI файла", "MDI file error", "Cyrl") is None  # copied MDI ignored
    assert script_mismatch("Greška MDI datoteke", "MDI file error", "Cyrl") == "Latn"
    assert script_mismatch("Ошибка файла", "File error", "Latn") == "Cyrl"
    assert script_mismatch("ファイルを開く", "Open file", "Jpan") is None  # Kana + Han
    assert script_mismatch("打开文件", "Open file", "Hans") is None
    assert script_mismatch("파일 열기", "Open file", "Hang") is None
    assert script_mismatch("ファイルを開く", "Open file", "Hang") == "Kana"  # 4 Katakana, 2 Hiragana, 1 Han


@pytest.mark.parametrize(
    "src, tgt, script, reason",
    [
        ("  \n", "x", None, "empty"),
        ("%s: %s", "%s : %s", None, "placeholders"),
        ("Open the file now", "%s %s %s", None, "placeholders"),
        ("<b>Open</b> the file", "<b>Ouvrir</b> le fichier", None, "markup"),
        ("See https://x.org for more", "Voir https://x.org pour plus", None, "path_url_email"),
        ("Open file", "Ouvrir fichier", None, "min_words"),
        ("word " * 101, "mot " * 101, None, "max_words"),
        ("Open the file", "Open the file", None, "untranslated"),
        ("Open the file", "Открыть файл", "Latn", "script"),
        ("Open the _File", "Ouvrir le _fichier", "Latn", None),
    ],
)
def test_clean_pair_reasons(src, tgt, script, reason):
    assert reason is None or reason in REASONS
    assert clean_pair(src, tgt, script)[2] == reason


def test_clean_pair_normalises_both_sides():
    src, tgt, reason = clean_pair("Open the\n_File", "Ouvrir  le\t_fichier", "Latn")
    assert (src, tgt, reason) == ("Open the File", "Ouvrir le fichier", None)


def test_min_words_is_configurable():
    assert clean_pair("Open file", "Ouvrir fichier", None, CleanConfig(min_words=2))[2] is None
    assert clean_pair("Open the file", "Ouvrir le fichier", None, CleanConfig(min_words=4))[2] == "min_words"
