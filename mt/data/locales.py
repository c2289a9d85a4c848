"""Map gettext locale folder names (``de``, ``zh_CN``, ``sr@latin``) to FLORES-200 codes.

Rules, in order (see :func:`classify_locale`):

1. ``en``, ``en_GB``, ``en@quot`` ... are English variants: skipped, they are not translations.
2. An exact entry of :data:`LOCALE_CODES` wins (``zh_TW``, ``pa_PK``, ``sr@latin``, ``az_IR``).
3. ``lang_REGION`` without an entry is the same written language as ``lang`` (``de_CH``, ``fr_CA``,
   ``bn_IN``) and merges into its code - except for languages whose script depends on the region
   (:data:`REGION_SENSITIVE`: ``zh``, ``pa``, ``sr`` ...), which must be listed explicitly.
4. Anything else (an unknown language, an unknown ``@modifier``) is reported and skipped, never guessed.

Macrolanguages map to the individual language FLORES-200 uses for them, as NLLB did: ``ar`` ->
``arb_Arab``, ``fa`` -> ``pes_Arab``, ``ms`` -> ``zsm_Latn``, ``qu`` -> ``quy_Latn``, ``ff`` ->
``fuv_Latn``; for languages FLORES-200 lacks, the individual language that writes the catalogues
(``kv`` -> ``kpv_Cyrl`` Komi-Zyrian, ``kok`` -> ``gom_Deva`` Goan Konkani). Collective codes with no
single language behind them (``nah`` Nahuatl languages, ``son`` Songhay languages) are skipped
(:data:`UNMAPPED`). A folder whose text is in another script than its code says (``tt`` holds both
Cyrillic and Latin Tatar) is sorted out per sentence by the builder (:mod:`mt.data.clean` script check).

When several folders map to one code (``pt_BR``, ``pt``, ``pt_PT`` -> ``por_Latn``), :func:`variant_rank`
orders them: :data:`VARIANT_PRIORITY` first (FLORES-200's own variety: Brazilian Portuguese, Taiwan
Traditional Chinese), then the bare language folder, then the others by name. The corpus builder takes
each English string's translations from the best-ranked folder that has it.

``mt-data locales [LOCALE_DIR]`` prints the table for a locale tree.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mt.common.langs import EXTRA_CODES, FLORES200_CODES

KNOWN_CODES = frozenset(FLORES200_CODES) | frozenset(EXTRA_CODES)

# gettext locale (language[_TERRITORY][@modifier]) -> FLORES-200 style code.
LOCALE_CODES: dict[str, str] = {
    "ab": "abk_Cyrl",
    "ace": "ace_Latn",
    "ach": "ach_Latn",
    "af": "afr_Latn",
    "ak": "aka_Latn",
    "am": "amh_Ethi",
    "an": "arg_Latn",
    "ang": "ang_Latn",
    "ar": "arb_Arab",
    "as": "asm_Beng",
    "ast": "ast_Latn",
    "ay": "ayr_Latn",
    "az": "azj_Latn",
    "az_IR": "azb_Arab",
    "ba": "bak_Cyrl",
    "bar": "bar_Latn",
    "be": "bel_Cyrl",
    "be@latin": "bel_Latn",
    "bg": "bul_Cyrl",
    "bi": "bis_Latn",
    "bm": "bam_Latn",
    "bn": "ben_Beng",
    "bo": "bod_Tibt",
    "br": "bre_Latn",
    "bs": "bos_Latn",
    "byn": "byn_Ethi",
    "ca": "cat_Latn",
    "ca@valencia": "cat_Latn",
    "ce": "che_Cyrl",
    "ceb": "ceb_Latn",
    "ch": "cha_Latn",
    "chr": "chr_Cher",
    "ckb": "ckb_Arab",
    "crh": "crh_Latn",
    "cs": "ces_Latn",
    "csb": "csb_Latn",
    "cv": "chv_Cyrl",
    "cy": "cym_Latn",
    "da": "dan_Latn",
    "de": "deu_Latn",
    "dv": "div_Thaa",
    "dz": "dzo_Tibt",
    "ee": "ewe_Latn",
    "el": "ell_Grek",
    "eo": "epo_Latn",
    "es": "spa_Latn",
    "et": "est_Latn",
    "eu": "eus_Latn",
    "fa": "pes_Arab",
    "ff": "fuv_Latn",
    "fi": "fin_Latn",
    "fil": "tgl_Latn",
    "fj": "fij_Latn",
    "fo": "fao_Latn",
    "fr": "fra_Latn",
    "frp": "frp_Latn",
    "fur": "fur_Latn",
    "fy": "fry_Latn",
    "ga": "gle_Latn",
    "gd": "gla_Latn",
    "gez": "gez_Ethi",
    "gl": "glg_Latn",
    "gn": "grn_Latn",
    "gu": "guj_Gujr",
    "gv": "glv_Latn",
    "ha": "hau_Latn",
    "haw": "haw_Latn",
    "he": "heb_Hebr",
    "hi": "hin_Deva",
    "hr": "hrv_Latn",
    "ht": "hat_Latn",
    "hu": "hun_Latn",
    "hy": "hye_Armn",
    "ia": "ina_Latn",
    "id": "ind_Latn",
    "ie": "ile_Latn",
    "ig": "ibo_Latn",
    "ilo": "ilo_Latn",
    "io": "ido_Latn",
    "is": "isl_Latn",
    "it": "ita_Latn",
    "iu": "iku_Cans",
    "ja": "jpn_Jpan",
    "jam": "jam_Latn",
    "jv": "jav_Latn",
    "ka": "kat_Geor",
    "kab": "kab_Latn",
    "ki": "kik_Latn",
    "kk": "kaz_Cyrl",
    "kl": "kal_Latn",
    "km": "khm_Khmr",
    "kmr": "kmr_Latn",
    "kn": "kan_Knda",
    "ko": "kor_Hang",
    "kok": "gom_Deva",
    "ku": "kmr_Latn",
    "kv": "kpv_Cyrl",
    "kw": "cor_Latn",
    "ky": "kir_Cyrl",
    "lb": "ltz_Latn",
    "lg": "lug_Latn",
    "li": "lim_Latn",
    "ln": "lin_Latn",
    "lo": "lao_Laoo",
    "lt": "lit_Latn",
    "lv": "lvs_Latn",
    "mai": "mai_Deva",
    "mg": "plt_Latn",
    "mhr": "mhr_Cyrl",
    "mi": "mri_Latn",
    "mk": "mkd_Cyrl",
    "ml": "mal_Mlym",
    "mn": "khk_Cyrl",
    "mo": "ron_Cyrl",
    "mr": "mar_Deva",
    "ms": "zsm_Latn",
    "mt": "mlt_Latn",
    "my": "mya_Mymr",
    "na": "nau_Latn",
    "nb": "nob_Latn",
    "nds": "nds_Latn",
    "ne": "npi_Deva",
    "nl": "nld_Latn",
    "nn": "nno_Latn",
    "no": "nob_Latn",
    "nso": "nso_Latn",
    "nv": "nav_Latn",
    "ny": "nya_Latn",
    "oc": "oci_Latn",
    "om": "gaz_Latn",
    "or": "ory_Orya",
    "pa": "pan_Guru",
    "pa_PK": "pnb_Arab",
    "pap": "pap_Latn",
    "pi": "pli_Deva",
    "pl": "pol_Latn",
    "ps": "pbt_Arab",
    "pt": "por_Latn",
    "qu": "quy_Latn",
    "ro": "ron_Latn",
    "rom": "rom_Latn",
    "ru": "rus_Cyrl",
    "rw": "kin_Latn",
    "sa": "san_Deva",
    "sc": "srd_Latn",
    "sd": "snd_Arab",
    "sg": "sag_Latn",
    "si": "sin_Sinh",
    "sk": "slk_Latn",
    "sl": "slv_Latn",
    "sm": "smo_Latn",
    "sn": "sna_Latn",
    "so": "som_Latn",
    "sq": "als_Latn",
    "sr": "srp_Cyrl",
    "sr@Latn": "srp_Latn",
    "sr@latin": "srp_Latn",
    "sr@ije": "srp_Cyrl",
    "sr@ijekavian": "srp_Cyrl",
    "sr@ijekavianlatin": "srp_Latn",
    "ss": "ssw_Latn",
    "st": "sot_Latn",
    "su": "sun_Latn",
    "sv": "swe_Latn",
    "sw": "swh_Latn",
    "ta": "tam_Taml",
    "te": "tel_Telu",
    "tg": "tgk_Cyrl",
    "th": "tha_Thai",
    "ti": "tir_Ethi",
    "tig": "tig_Ethi",
    "tk": "tuk_Latn",
    "tl": "tgl_Latn",
    "tn": "tsn_Latn",
    "tr": "tur_Latn",
    "ts": "tso_Latn",
    "tt": "tat_Cyrl",
    "tt@iqtelif": "tat_Latn",
    "tzm": "tzm_Latn",
    "ug": "uig_Arab",
    "uk": "ukr_Cyrl",
    "ur": "urd_Arab",
    "uz": "uzn_Latn",
    "uz@cyrillic": "uzn_Cyrl",
    "uz@Latn": "uzn_Latn",
    "ve": "ven_Latn",
    "vi": "vie_Latn",
    "wa": "wln_Latn",
    "wal": "wal_Ethi",
    "wo": "wol_Latn",
    "xh": "xho_Latn",
    "yi": "ydd_Hebr",
    "yo": "yor_Latn",
    "yue": "yue_Hant",
    "zh_CN": "zho_Hans",
    "zh_SG": "zho_Hans",
    "zh_Hans": "zho_Hans",
    "zh_TW": "zho_Hant",
    "zh_HK": "zho_Hant",
    "zh_MO": "zho_Hant",
    "zh_Hant": "zho_Hant",
    "zu": "zul_Latn",
}

# Languages where the territory can change the script or the standard: ``lang_XX`` only maps if listed.
REGION_SENSITIVE = frozenset({"zh", "pa", "az", "sr", "uz", "sd", "ks", "ku", "mn", "ms", "ff", "tzm"})

# Best variant first when several folders give one code (FLORES-200's own variety leads).
VARIANT_PRIORITY: dict[str, tuple[str, ...]] = {
    "por_Latn": ("pt_BR", "pt", "pt_PT"),
    "zho_Hans": ("zh_CN", "zh_Hans", "zh_SG"),
    "zho_Hant": ("zh_TW", "zh_Hant", "zh_HK", "zh_MO"),
    "nob_Latn": ("nb", "nb_NO", "no"),
    "tgl_Latn": ("tl", "fil"),
}

# Folders we know and deliberately leave unmapped (reported with this reason).
UNMAPPED = {
    "nah": "collective code for the Nahuatl languages, no single language",
    "son": "collective code for the Songhay languages, no single language",
    "ain": "Ainu is written in Katakana or Latin; no single script",
}


@dataclass(frozen=True)
class LocaleInfo:
    """What one locale folder is: ``status`` is ``mapped``, ``english`` or ``unknown``."""

    locale: str
    code: str | None
    status: str
    note: str = ""


def _split(locale: str) -> tuple[str, str, str]:
    """``sr_RS.UTF-8@latin`` -> (``sr``, ``RS``, ``latin``); the ``.codeset`` part is dropped."""
    rest, _, modifier = locale.partition("@")
    rest = rest.split(".", 1)[0]
    lang, _, territory = rest.partition("_")
    return lang, territory, modifier


def classify_locale(locale: str) -> LocaleInfo:
    """Classify one gettext locale folder name (see the module docstring for the rules)."""
    lang, territory, modifier = _split(locale)
    if lang == "en":
        return LocaleInfo(locale, None, "english", "English variant (not a translation)")
    base = lang + (f"_{territory}" if territory else "") + (f"@{modifier}" if modifier else "")
    if base in LOCALE_CODES:
        return LocaleInfo(locale, LOCALE_CODES[base], "mapped")
    if modifier:
        return LocaleInfo(locale, None, "unknown", f"unknown modifier @{modifier}")
    if territory and lang in LOCALE_CODES:
        if lang in REGION_SENSITIVE:
            return LocaleInfo(locale, None, "unknown", f"{lang}_{territory}: script depends on the region")
        return LocaleInfo(locale, LOCALE_CODES[lang], "mapped", f"regional variant of {lang}")
    if lang in UNMAPPED:
        return LocaleInfo(locale, None, "unknown", UNMAPPED[lang])
    return LocaleInfo(locale, None, "unknown", "no known FLORES-200 code")


def locale_code(locale: str) -> str | None:
    """The FLORES-200 code of a locale folder, or None (English variant or unknown)."""
    return classify_locale(locale).code


def variant_rank(locale: str) -> tuple[int, int, str]:
    """Sort key among folders mapping to the same code: lower is preferred (deterministic)."""
    code = locale_code(locale)
    prio = VARIANT_PRIORITY.get(code or "", ())
    if locale in prio:
        return (0, prio.index(locale), locale)
    lang, territory, modifier = _split(locale)
    return (1, 0 if not (territory or modifier) else 1, locale)


def scan_locale_dir(locale_dir: str | os.PathLike) -> list[LocaleInfo]:
    """Classify every folder of a locale tree that holds ``LC_MESSAGES/*.mo`` files, sorted by name."""
    root = Path(locale_dir)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and any((p / "LC_MESSAGES").glob("*.mo")))
    return [classify_locale(n) for n in names]


def print_locale_table(locale_dir: str) -> None:
    """Each locale folder of ``locale_dir`` with its FLORES-200 code (stdout), a summary on stderr."""
    infos = scan_locale_dir(locale_dir)
    print(f"{'locale':<20} {'code':<10} {'set':<7} status")
    for info in infos:
        kind = "" if info.code is None else ("flores" if info.code in FLORES200_CODES else "extra")
        print(
            f"{info.locale:<20} {info.code or '-':<10} {kind:<7} {info.status}"
            + (f" ({info.note})" if info.note else "")
        )
    mapped = [i for i in infos if i.code]
    print(
        f"\n{len(infos)} folders: {len(mapped)} mapped to {len({i.code for i in mapped})} codes, "
        f"{sum(i.status == 'english' for i in infos)} English, "
        f"{sum(i.status == 'unknown' for i in infos)} unknown",
        file=sys.stderr,
    )
