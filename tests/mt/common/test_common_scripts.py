"""mt.common.scripts: the one script table (mt.data.clean and the mining filters both count with it)."""

from mt.common.scripts import only_letters_of, script_counts, script_fraction
from mt.data.clean import script_mismatch


def test_marks_count_with_their_script():
    # 6 letters + 6 vowel signs / viramas: the old name-based counter in mt.data.clean said 7 (letters only)
    assert script_counts("नमस्ते दुनिया") == {"Deva": 12}
    assert script_counts("ক্ষমা") == {"Beng": 5}


def test_meitei_mayek_is_counted():
    # the old counter in mt.data.clean had no Meetei entry and returned {}
    assert script_counts("ꯃꯤꯇꯩ") == {"Mtei": 4}
    assert script_mismatch("ꯃꯤꯇꯩ ꯃꯌꯦꯛ", "Meitei Mayek", "Mtei") is None
    assert script_mismatch("ꯃꯤꯇꯩ ꯃꯌꯦꯛ", "Meitei Mayek", "Beng") == "Mtei"


def test_inherited_marks_digits_and_punctuation_count_nowhere():
    assert script_counts("e\u0301 1, 2!") == {"Latn": 1}
    assert script_counts("᚛ᚐᚋᚔ᚜ ᚠᚢᚦ") == {"Ogam": 3, "Runr": 3}  # scripts the old gettext table knew
    assert script_counts("ꓐ") == {"Zyyy": 1}  # a letter of a script the table does not list


def test_only_letters_of():
    assert only_letters_of("Datei öffnen 3", "Latn") and only_letters_of("ファイルを開く", "Jpan")
    assert only_letters_of("नमस्ते, दुनिया!", "Deva")
    assert not only_letters_of("Ошибка MDI", "Cyrl") and not only_letters_of("打开 file", "Hans")


def test_mismatch_and_fraction_agree_on_devanagari_with_a_latin_name():
    text = "GNOME फ़ाइल खोलें"
    assert script_mismatch(text, "Open the file", "Deva") is None
    assert script_fraction(text, "Deva") > 0.5
