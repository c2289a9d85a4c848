"""FLORES-200 language codes and the ``__xxx_Yyyy__`` language-token convention.

Codes are ISO 639-3 + ISO 15924 script (``deu_Latn``), exactly as FLORES-200 and NLLB name them.
"""

from __future__ import annotations

import re

from mt.common.errors import UserError

FLORES200_CODES: tuple[str, ...] = tuple(
    """
ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab arb_Arab
arb_Latn ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl
bam_Latn ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn
bul_Cyrl cat_Latn ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn
dyu_Latn dzo_Tibt ell_Grek eng_Latn epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn fij_Latn fin_Latn
fon_Latn fra_Latn fur_Latn fuv_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn
heb_Hebr hin_Deva hne_Deva hrv_Latn hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn
jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda kas_Arab kas_Deva kat_Geor knc_Arab knc_Latn
kaz_Cyrl kbp_Latn kea_Latn khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn kmr_Latn kon_Latn kor_Hang
lao_Laoo lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn ltz_Latn lua_Latn lug_Latn luo_Latn
lus_Latn lvs_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Arab min_Latn mkd_Cyrl plt_Latn mlt_Latn
mni_Beng khk_Cyrl mos_Latn mri_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nso_Latn nus_Latn
nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn pan_Guru pap_Latn pes_Arab pol_Latn por_Latn prs_Arab
pbt_Arab quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Olck scn_Latn shn_Mymr sin_Sinh
slk_Latn slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn als_Latn srd_Latn srp_Cyrl
ssw_Latn sun_Latn swe_Latn swh_Latn szl_Latn tam_Taml tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai
tir_Ethi taq_Latn taq_Tfng tpi_Latn tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng
uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr
yor_Latn yue_Hant zho_Hans zho_Hant zsm_Latn zul_Latn
""".split()
)

# Well-formed codes outside FLORES-200 that the gettext catalogues provide (ISO 639-3 + ISO 15924):
# script variants of FLORES languages and languages FLORES-200 does not cover. Kept short and explicit so
# a typo in a locale table is caught by the tests instead of inventing a language.
EXTRA_CODES: tuple[str, ...] = tuple(
    """
abk_Cyrl ach_Latn ang_Latn arg_Latn bar_Latn bel_Latn bis_Latn bre_Latn byn_Ethi cha_Latn che_Cyrl
chr_Cher chv_Cyrl cor_Latn csb_Latn div_Thaa frp_Latn fry_Latn gez_Ethi glv_Latn gom_Deva haw_Latn
iku_Cans ile_Latn ina_Latn ido_Latn jam_Latn kal_Latn kpv_Cyrl mhr_Cyrl nau_Latn nav_Latn nds_Latn
pli_Deva pnb_Arab rom_Latn ron_Cyrl srp_Latn tat_Latn tig_Ethi tzm_Latn uzn_Cyrl ven_Latn wal_Ethi
wln_Latn
""".split()
)

# The language every English-centric step pairs with: gettext catalogues translate from it, mined and
# BUCC-style bitext, xsim and the encoder teacher align to it, the classification and gendir evals start from it.
ENGLISH = "eng_Latn"

_CODE_RE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_TOKEN_RE = re.compile(r"^__([a-z]{3}_[A-Z][a-z]{3})__$")


def is_code(code: str) -> bool:
    """True for any well-formed ``xxx_Yyyy`` code (FLORES-200 or a script variant such as ``srp_Latn``)."""
    return bool(_CODE_RE.match(code))


def check_code(code: str, where: str = "") -> str:
    """Return ``code`` or raise a UserError that says what a language code looks like."""
    if not is_code(code):
        prefix = f"{where}: " if where else ""
        raise UserError(
            f"{prefix}unknown language code {code!r}: use FLORES-200 codes such as eng_Latn, deu_Latn, zho_Hans"
        )
    return code


def lang_token(code: str) -> str:
    """``deu_Latn`` -> ``__deu_Latn__`` (NLLB's language token)."""
    return f"__{code}__"


def token_lang(token: str) -> str | None:
    """``__deu_Latn__`` -> ``deu_Latn``; None for any other token."""
    m = _TOKEN_RE.match(token)
    return m.group(1) if m else None


def parse_pair(pair: str, *, pivot: str | None = None, codes: bool = True) -> tuple[str, str]:
    """``eng_Latn-deu_Latn`` -> (``eng_Latn``, ``deu_Latn``), validating both codes.

    ``pivot``: a bare code is that language paired with ``pivot`` (mine-eval: ``deu_Latn`` is deu_Latn-eng_Latn).
    ``codes=False``: any two non-empty names (real BUCC 2018 files say ``de-en``).
    """
    parts = pair.split("-")
    if pivot is not None and len(parts) == 1 and parts[0]:
        parts.append(pivot)
    if len(parts) != 2 or not all(parts):
        bucc = "" if codes else " (or de-en, as the real BUCC 2018 files name them)"
        raise UserError(f"language pair {pair!r} should look like eng_Latn-deu_Latn{bucc}")
    if not codes:
        return parts[0], parts[1]
    return check_code(parts[0], pair), check_code(parts[1], pair)


def script_of(code: str) -> str:
    """The ISO 15924 script part of a code: ``zho_Hans`` -> ``Hans``."""
    return code.split("_", 1)[1]
