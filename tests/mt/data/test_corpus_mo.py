import codecs
import gettext
import shutil
import subprocess

import pytest
from _mo_writer import mo_bytes, write_mo

from mt.common.errors import UserError
from mt.data.mo import MoFormatError, parse_mo, read_mo

ENTRIES = [
    ("Open the file", "Datei öffnen"),
    ("Close", "Schließen", "menu"),  # msgctxt
    {
        "msgid": "%d file deleted",
        "msgid_plural": "%d files deleted",
        "msgstr": ["%d Datei gelöscht", "%d Dateien gelöscht"],
    },
    ("Quit", "Beenden"),
]


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_both_byte_orders_give_the_same_catalogue(tmp_path, byteorder):
    path = write_mo(tmp_path / f"{byteorder}.mo", ENTRIES, byteorder=byteorder)
    cat = read_mo(path)
    assert cat.byteorder == byteorder
    assert cat.charset == "utf-8"
    assert cat.header["Language"] == "xx"
    by_id = {e.msgid: e for e in cat.entries}
    assert set(by_id) == {"Open the file", "Close", "%d file deleted", "Quit"}
    assert by_id["Open the file"].msgstr == ("Datei öffnen",)
    assert by_id["Close"].msgctxt == "menu" and by_id["Close"].key == "menu\x04Close"
    assert by_id["Quit"].msgctxt is None and by_id["Quit"].key == "Quit"
    plural = by_id["%d file deleted"]
    assert plural.msgid_plural == "%d files deleted"
    assert plural.msgstr == ("%d Datei gelöscht", "%d Dateien gelöscht")


def test_pairs_use_singular_and_plural_forms(tmp_path):
    cat = read_mo(write_mo(tmp_path / "a.mo", ENTRIES))
    pairs = set(cat.pairs())
    assert ("%d file deleted", "%d Datei gelöscht") in pairs
    assert ("%d files deleted", "%d Dateien gelöscht") in pairs
    assert ("Close", "Schließen") in pairs
    assert all(en for en, _ in pairs)  # the header entry is not a pair
    assert len(pairs) == 5


def test_plural_with_one_form_and_empty_translation(tmp_path):
    entries = [{"msgid": "one apple", "msgid_plural": "many apples", "msgstr": ["ein Apfel"]}, ("Empty", "")]
    pairs = list(read_mo(write_mo(tmp_path / "a.mo", entries)).pairs())
    assert pairs == [("one apple", "ein Apfel")]


def test_latin1_charset_from_header(tmp_path):
    entries = [("Open the file", "Ouvrir le fichier élémentaire"), ("Quit now", "Quitter tôt")]
    path = write_mo(tmp_path / "l1.mo", entries, charset="ISO-8859-1")
    assert "é".encode("latin-1") in path.read_bytes()  # really latin-1 on disk, not UTF-8
    cat = read_mo(path)
    assert codecs.lookup(cat.charset).name == codecs.lookup("latin-1").name
    assert dict(cat.pairs())["Open the file"] == "Ouvrir le fichier élémentaire"


def test_agrees_with_the_stdlib_reader(tmp_path):
    path = write_mo(tmp_path / "a.mo", ENTRIES, byteorder="big")
    with open(path, "rb") as fh:
        ref = gettext.GNUTranslations(fh)
    cat = read_mo(path)
    for e in cat.entries:
        if e.msgid_plural is None and e.msgctxt is None:
            assert ref.gettext(e.msgid) == e.msgstr[0]
    assert ref.pgettext("menu", "Close") == "Schließen"
    assert ref.ngettext("%d file deleted", "%d files deleted", 5) == "%d Dateien gelöscht"


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="needs GNU msgfmt")
@pytest.mark.parametrize("endianness", ["little", "big"])
def test_reads_files_compiled_by_msgfmt(tmp_path, endianness):
    po = tmp_path / "x.po"
    po.write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\n"\n'
        '"Plural-Forms: nplurals=2; plural=(n != 1);\\n"\n\n'
        'msgctxt "verb"\nmsgid "Open"\nmsgstr "Öffnen"\n\n'
        'msgid "%d line"\nmsgid_plural "%d lines"\nmsgstr[0] "%d Zeile"\nmsgstr[1] "%d Zeilen"\n',
        encoding="utf-8",
    )
    mo = tmp_path / "x.mo"
    subprocess.run(["msgfmt", f"--endianness={endianness}", "-o", str(mo), str(po)], check=True)
    cat = read_mo(mo)
    assert cat.byteorder == endianness
    assert sorted(cat.pairs()) == [("%d line", "%d Zeile"), ("%d lines", "%d Zeilen"), ("Open", "Öffnen")]
    assert [e.msgctxt for e in cat.entries if e.msgid == "Open"] == ["verb"]


def test_truncated_file_names_file_and_problem(tmp_path):
    data = mo_bytes(ENTRIES)
    path = tmp_path / "cut.mo"
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(MoFormatError) as exc:
        read_mo(path)
    msg = str(exc.value)
    assert str(path) in msg and "truncated" in msg and "runs past the end" in msg
    assert isinstance(exc.value, UserError)


@pytest.mark.parametrize(
    "mangle, expected",
    [
        (lambda d: d[:10], "shorter than the 28-byte header"),
        (lambda d: b"\x00\x00\x00\x00" + d[4:], "bad magic number"),
        (lambda d: d[:4] + (2 << 16).to_bytes(4, "little") + d[8:], "unsupported major revision 2"),
        (lambda d: d[:8] + (10**6).to_bytes(4, "little") + d[12:], "table of originals"),
    ],
)
def test_corrupt_headers_are_reported(mangle, expected):
    with pytest.raises(MoFormatError, match=expected):
        parse_mo(mangle(mo_bytes(ENTRIES)), "bad.mo")


def test_major_revision_1_is_read(tmp_path):
    cat = parse_mo(mo_bytes(ENTRIES, revision=1 << 16), "r1.mo")
    assert len(cat.entries) == 4


def test_invalid_bytes_for_charset_are_reported():
    data = mo_bytes([("Open the file", "Datei öffnen")], charset="UTF-8")
    data = data.replace("ö".encode(), b"\xff\xfe")
    with pytest.raises(MoFormatError, match=r"translation #1 is not valid utf-8"):
        parse_mo(data, "bad.mo")


def test_unknown_charset_is_reported():
    with pytest.raises(MoFormatError, match="unknown charset 'KLINGON-8'"):
        parse_mo(mo_bytes([("a", "b")], charset="KLINGON-8", encoding="ascii"), "x.mo")
