import pytest
from _mo_writer import write_mo

from mt.common.langs import EXTRA_CODES, FLORES200_CODES, is_code
from mt.data.cli import data_main
from mt.data.locales import (
    LOCALE_CODES,
    VARIANT_PRIORITY,
    classify_locale,
    locale_code,
    scan_locale_dir,
    variant_rank,
)


@pytest.mark.parametrize(
    "locale, code",
    [
        ("de", "deu_Latn"),
        ("zh_CN", "zho_Hans"),
        ("zh_TW", "zho_Hant"),
        ("zh_HK", "zho_Hant"),
        ("sr", "srp_Cyrl"),
        ("sr@latin", "srp_Latn"),
        ("pt_BR", "por_Latn"),
        ("pt", "por_Latn"),
        ("nb", "nob_Latn"),
        ("fa", "pes_Arab"),
        ("ms", "zsm_Latn"),
        ("sw", "swh_Latn"),
        ("et", "est_Latn"),
        ("lv", "lvs_Latn"),
        ("uz", "uzn_Latn"),
        ("uz@cyrillic", "uzn_Cyrl"),
        ("ar", "arb_Arab"),
        ("ne", "npi_Deva"),
        ("mn", "khk_Cyrl"),
        ("om", "gaz_Latn"),
        ("pa_PK", "pnb_Arab"),
        ("az_IR", "azb_Arab"),
        ("be@latin", "bel_Latn"),
        ("tt@iqtelif", "tat_Latn"),
        ("yi", "ydd_Hebr"),
    ],
)
def test_known_locales(locale, code):
    assert locale_code(locale) == code


@pytest.mark.parametrize(
    "locale, base",
    [("de_CH", "de"), ("fr_CA", "fr"), ("es_MX", "es"), ("bn_IN", "bn"), ("de_DE.UTF-8", "de"), ("ca@valencia", "ca")],
)
def test_regional_variants_merge_into_the_base_language(locale, base):
    assert locale_code(locale) == locale_code(base) is not None


@pytest.mark.parametrize("locale", ["en", "en_GB", "en_AU", "en@quot", "en@shaw", "en_US.UTF-8"])
def test_english_variants_are_skipped(locale):
    info = classify_locale(locale)
    assert info.code is None and info.status == "english"


@pytest.mark.parametrize(
    "locale", ["xx", "qqq", "de@klingon", "zh_SG@x", "zh", "zh_XX", "pa_XX", "sr_XX", "nah", "son"]
)
def test_unknown_locales_are_not_guessed(locale):
    info = classify_locale(locale)
    assert info.code is None and info.status == "unknown" and info.note


def test_every_mapped_code_is_well_formed_and_allow_listed():
    known = set(FLORES200_CODES) | set(EXTRA_CODES)
    for locale, code in LOCALE_CODES.items():
        assert is_code(code), (locale, code)
        assert code in known, f"{locale} -> {code}: add it to EXTRA_CODES or fix the table"
    assert not set(EXTRA_CODES) & set(FLORES200_CODES)
    assert len(set(EXTRA_CODES)) == len(EXTRA_CODES)
    assert all(is_code(c) for c in EXTRA_CODES)


def test_variant_rank_is_deterministic_and_prefers_flores_variety():
    pt = sorted(["pt_PT", "pt", "pt_BR"], key=variant_rank)
    assert pt == ["pt_BR", "pt", "pt_PT"]
    assert sorted(["zh_HK", "zh_TW", "zh_Hant"], key=variant_rank)[0] == "zh_TW"
    de = sorted(["de_CH", "de_AT", "de"], key=variant_rank)
    assert de == ["de", "de_AT", "de_CH"]  # bare language first, then by name
    for code, order in VARIANT_PRIORITY.items():
        assert all(locale_code(loc) == code for loc in order)


def test_scan_and_print_table(tmp_path, capsys):
    for loc in ["de", "en_GB", "qq", "sr@latin"]:
        write_mo(tmp_path / loc / "LC_MESSAGES" / "x.mo", [("Open the file", "x")])
    (tmp_path / "empty" / "LC_MESSAGES").mkdir(parents=True)
    infos = scan_locale_dir(tmp_path)
    assert [i.locale for i in infos] == ["de", "en_GB", "qq", "sr@latin"]
    assert data_main(["locales", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "srp_Latn" in out and "extra" in out and "unknown" in out
