"""Corpus metrics through sacrebleu: chrF++, BLEU and spBLEU with a *local* SentencePiece model.

Why local spBLEU: sacrebleu's own ``flores200`` tokenizer downloads its SentencePiece model on first
use, which is impossible offline (and its short URL is known to fail). So spBLEU here tokenizes both
sides with the SentencePiece model the user passes (``--spm-model``, normally the FLORES-200
``flores200_sacrebleu_tokenizer_spm.model``) exactly as sacrebleu's SPM tokenizer does
(``" ".join(pieces)``), then computes BLEU with ``tokenize='none'``. The signature says so:
``tok:spm-local(<sha256 of the model, 8 hex>)`` instead of ``tok:flores200``, so a number computed
with another model can never pass for official spBLEU.

BLEU is tokenised for the target language as ``sacrebleu -l xx-tgt`` does: ``zh`` for Chinese (zho_Hans,
zho_Hant, yue_Hant), ``ja-mecab`` for Japanese and ``ko-mecab`` for Korean where their extra packages are
installed (else a note says so and ``char`` / ``13a`` stand in), ``13a`` otherwise; ``--tokenize`` overrides
it and the signature always names the tokenizer used (``tok:zh``). spBLEU needs none of this.

Paired bootstrap resampling (Koehn 2004) works on sacrebleu's sentence-level sufficient statistics,
the way ``sacrebleu --paired-bs`` does; with the same seed both give the same p-value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import sacrebleu
from sacrebleu.metrics.base import Metric

from mt.common.errors import UserError
from mt.common.files import sha256_file
from mt.common.flags import arg
from mt.common.langs import check_code, is_code
from mt.common.textio import read_lines
from mt.data.spm import SpmTokenizer

METRIC_NAMES = ("chrf++", "spbleu", "bleu")
# where sacrebleu itself would have cached the FLORES-200 model (basename of its download URL)
_SACREBLEU_CACHED_SPM = (
    Path(os.environ.get("SACREBLEU", Path.home() / ".sacrebleu")) / "models" / "flores200sacrebleuspm"
)
SPM_MODEL_ENV = "NLLB_SPM_MODEL"
FLORES200_SPM_NAME = "flores200_sacrebleu_tokenizer_spm.model"
FLORES200_SPM_URL = (
    "https://dl.fbaipublicfiles.com/large_objects/nllb/models/spm_200/flores200_sacrebleu_tokenizer_spm.model"
)


def spm_missing_message(path: str | os.PathLike | None) -> str:
    where = f"SentencePiece model {path} not found" if path else "spBLEU needs the FLORES-200 SentencePiece model"
    return (
        f"{where}: download {FLORES200_SPM_NAME} (the model sacrebleu's flores200 tokenizer uses, "
        f"{FLORES200_SPM_URL}) on a machine with internet, then pass --spm-model PATH "
        f"(or set {SPM_MODEL_ENV}=PATH)"
    )


def default_spm_model() -> Path | None:
    """The spBLEU model to use when none is given: $NLLB_SPM_MODEL, else sacrebleu's own cache."""
    env = os.environ.get(SPM_MODEL_ENV)
    if env:
        return Path(env)
    return _SACREBLEU_CACHED_SPM if _SACREBLEU_CACHED_SPM.is_file() else None


@lru_cache(maxsize=4)
def _spm(model: str) -> SpmTokenizer:
    if not Path(model).is_file():
        raise UserError(spm_missing_message(model))
    return SpmTokenizer(model, hint=f"pass --spm-model {FLORES200_SPM_NAME}")


def _spm_pieces(model: str) -> Callable[[Sequence[str]], list[str]]:
    """``line -> " ".join(pieces)`` with a local SentencePiece model, as sacrebleu's TokenizerSPM does."""
    tok = _spm(model)
    return lambda lines: [" ".join(pieces) for pieces in tok.encode_batch(lines)]


@lru_cache(maxsize=4)
def _spm_signature(model: str) -> str:
    return f"spm-local({sha256_file(model)[:8]})"


# BLEU tokenizers a user may pick (sacrebleu's, less those that download a model: use spbleu for those)
BLEU_TOKENIZERS = ("13a", "zh", "ja-mecab", "ko-mecab", "intl", "char", "none")
# sacrebleu's choice for its -l target (zh, ja, ko), by FLORES-200 code; every other language gets 13a
_TARGET_TOKENIZERS = {
    "zho_Hans": "zh",
    "zho_Hant": "zh",
    "yue_Hant": "zh",
    "jpn_Jpan": "ja-mecab",
    "kor_Hang": "ko-mecab",
}
# when MeCab is not installed: Japanese is written without spaces (characters), Korean with them (13a)
_FALLBACK = {"ja-mecab": ("char", "sacrebleu[ja]"), "ko-mecab": ("13a", "sacrebleu[ko]")}


@lru_cache(maxsize=None)
def tokenizer_available(name: str) -> bool:
    """Whether sacrebleu can build tokenizer ``name`` here (the MeCab ones need extra packages)."""
    try:
        sacrebleu.BLEU(tokenize=name)
    except (ImportError, RuntimeError):
        return False
    return True


def bleu_tokenizer(tgt_lang: str | None) -> tuple[str, str | None]:
    """(sacrebleu tokenizer for BLEU into ``tgt_lang``, a note for the user when it had to fall back)."""
    want = _TARGET_TOKENIZERS.get(tgt_lang or "", "13a")
    if want in _FALLBACK and not tokenizer_available(want):
        fallback, extra = _FALLBACK[want]
        return fallback, (
            f"BLEU into {tgt_lang}: sacrebleu's {want} tokenizer needs `pip install {extra}` (not installed); "
            f"tokenised with {fallback} instead (tok:{fallback} in the signature, not comparable with {want})"
        )
    return want, None


def check_tokenize(name: str) -> str:
    if name not in BLEU_TOKENIZERS:
        raise UserError(f"--tokenize {name!r}: choose from {', '.join(BLEU_TOKENIZERS)} (spBLEU: --metric spbleu)")
    if name in _FALLBACK and not tokenizer_available(name):
        raise UserError(f"--tokenize {name}: sacrebleu needs `pip install {_FALLBACK[name][1]}` for it")
    return name


def target_from_names(*paths: str | os.PathLike) -> str | None:
    """The target language that file names state: ``deu_Latn.devtest`` (FLORES layout) or
    ``eng_Latn-deu_Latn.hyp`` (generation directory); None when no name says it."""
    for p in paths:
        head = Path(p).name.split(".")[0]
        tail = head.rsplit("-", 1)[-1]
        for code in (head, tail):
            if is_code(code):
                return code
    return None


@dataclass
class MetricSpec:
    """A metric name plus what it needs; ``build()`` gives a fresh sacrebleu Metric and a preprocessor."""

    name: str
    spm_model: str | None = None
    tokenize: str | None = None  # BLEU: sacrebleu tokenizer; None: by target language (``for_target``), else 13a

    def __post_init__(self) -> None:
        self.name = normalize_metric_name(self.name)
        if self.tokenize is not None:
            if self.name != "bleu":
                raise UserError(f"--tokenize applies to BLEU only ({self.name} has its own tokenisation)")
            check_tokenize(self.tokenize)
        if self.name == "spbleu":
            model = self.spm_model or default_spm_model()
            if model is None:
                raise UserError(spm_missing_message(None))
            self.spm_model = str(model)

    def for_target(self, tgt_lang: str | None) -> tuple["MetricSpec", str | None]:
        """This metric for hypotheses in ``tgt_lang``: BLEU gets sacrebleu's tokenizer for that language
        unless ``tokenize`` was given. Returns (spec, a note when the right tokenizer is not installed)."""
        if self.name != "bleu" or self.tokenize is not None:
            return self, None
        tok, note = bleu_tokenizer(tgt_lang)
        return replace(self, tokenize=tok), note

    def build(self) -> tuple[Metric, Callable[[Sequence[str]], list[str]] | None]:
        if self.name == "chrf++":
            return sacrebleu.CHRF(word_order=2), None
        if self.name == "bleu":
            return sacrebleu.BLEU(tokenize=self.tokenize or "13a"), None
        return sacrebleu.BLEU(tokenize="none", force=True), _spm_pieces(self.spm_model)

    def signature(self, metric: Metric, **extra: object) -> str:
        """sacrebleu's signature, with ``tok:spm-local(sha8)`` for spBLEU and any extra fields
        (``bs``, ``seed``) placed where sacrebleu puts them (version stays last)."""
        sig = metric.get_signature()
        if self.name == "spbleu":
            sig.update("tok", _spm_signature(self.spm_model))
        for key, value in extra.items():
            sig.update(key, value)
        return sig.format()


def normalize_metric_name(name: str) -> str:
    key = name.strip().lower().replace("_", "").replace("-", "")
    aliases = {"chrf++": "chrf++", "chrfpp": "chrf++", "chrf2": "chrf++", "spbleu": "spbleu", "bleu": "bleu"}
    if key not in aliases:
        raise UserError(f"unknown metric {name!r}: choose from {', '.join(METRIC_NAMES)}")
    return aliases[key]


@dataclass
class Score:
    metric: str
    score: float
    signature: str
    n_lines: int


def _prepare(spec: MetricSpec, hyps: Sequence[str], refs: Sequence[str]):
    metric, pre = spec.build()
    if pre is not None:
        hyps, refs = pre(hyps), pre(refs)
    return metric, list(hyps), list(refs)


def corpus_score(hyps: Sequence[str], refs: Sequence[str], spec: MetricSpec) -> Score:
    """Corpus-level score of ``hyps`` against one reference per line."""
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} hypotheses but {len(refs)} references: the files must be line-aligned")
    if not refs:
        raise UserError("nothing to score: the files are empty")
    metric, h, r = _prepare(spec, hyps, refs)
    result = metric.corpus_score(h, [r])
    return Score(spec.name, float(result.score), spec.signature(metric), len(h))


def signatures(specs: Sequence[MetricSpec], tgt_langs: Sequence[str | None] = (None,)) -> dict[str, str]:
    """Each metric's signature (independent of the data: one reference, as everywhere here). A BLEU that
    used several tokenizers over ``tgt_langs`` gets one entry per tokenizer: ``bleu (tok:zh)``."""
    out: dict[str, str] = {}
    for spec in specs:
        variants = {(v := spec.for_target(t)[0]).tokenize: v for t in tgt_langs}
        for v in variants.values():
            key = spec.name if len(variants) == 1 else f"{spec.name} (tok:{v.tokenize})"
            out[key] = corpus_score(["a"], ["a"], v).signature
    return out


def target_notes(specs: Sequence[MetricSpec], tgt_langs: Sequence[str | None]) -> list[str]:
    """The notes of ``for_target`` (a tokenizer that is not installed), once each."""
    notes = (spec.for_target(t)[1] for spec in specs for t in tgt_langs)
    return list(dict.fromkeys(n for n in notes if n))


# ---------------------------------------------------------------------------------------------------
# files


def read_aligned(*paths: str | os.PathLike) -> list[list[str]]:
    """Read several line-aligned files as sacrebleu does (split on ``\\n``, right-stripped, no byte-order
    mark); a different line count is an error that names every file."""
    texts = [list(read_lines(p, progress=False, bom=True, strip=None)) for p in paths]
    counts = {len(t) for t in texts}
    if len(counts) > 1:
        detail = ", ".join(f"{p} has {len(t)} lines" for p, t in zip(paths, texts))
        raise UserError(f"line counts differ: {detail}; the files must be line-aligned (one sentence per line)")
    return texts


# ---------------------------------------------------------------------------------------------------
# paired bootstrap resampling


@dataclass
class BootstrapResult:
    metric: str
    signature: str
    n_lines: int
    n_samples: int
    seed: int
    score_a: float
    score_b: float
    ci_a: tuple[float, float]  # 95% percentile interval of each system's resampled score
    ci_b: tuple[float, float]
    delta: float  # score_b - score_a on the full test set
    delta_ci: tuple[float, float]  # 95% percentile interval of the resampled delta
    p_value: float  # probability that |delta| this large arises by chance (sacrebleu's paired-bs p)
    b_wins: float  # fraction of resamples where B scores higher than A (Koehn 2004)

    def summary(self, name_a: str = "A", name_b: str = "B") -> str:
        verdict = "significant" if self.p_value < 0.05 else "not significant"
        return "\n".join(
            [
                f"{self.metric} paired bootstrap: {self.n_samples} resamples of {self.n_lines} lines, seed {self.seed}",
                f"  {name_a}: {self.score_a:.2f}  95% CI [{self.ci_a[0]:.2f}, {self.ci_a[1]:.2f}]",
                f"  {name_b}: {self.score_b:.2f}  95% CI [{self.ci_b[0]:.2f}, {self.ci_b[1]:.2f}]",
                f"  delta (B - A): {self.delta:+.2f}  95% CI [{self.delta_ci[0]:+.2f}, {self.delta_ci[1]:+.2f}]",
                f"  p-value: {self.p_value:.4f} ({verdict} at 0.05); B better in {100 * self.b_wins:.1f}% of resamples",
            ]
        )


def _sentence_stats(metric: Metric, hyps: list[str], refs: list[str]) -> np.ndarray:
    # sacrebleu's sufficient statistics per sentence: what its own --paired-bs resamples
    return np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)


def _resampled_scores(metric: Metric, stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    sums = counts @ stats  # (n_samples, n_stats): each row the statistics of one resampled corpus
    return np.array([metric._compute_score_from_stats(row).score for row in sums])


def paired_bootstrap(
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    refs: Sequence[str],
    spec: MetricSpec,
    n_samples: int = 1000,
    seed: int = 12345,
) -> BootstrapResult:
    """Paired bootstrap test of system B against baseline A on the same references.

    Both systems are scored on the same ``n_samples`` resampled test sets (lines drawn with
    replacement). The p-value is sacrebleu's (Moses'): the share of resampled |delta|s, centred on
    their mean, that exceed the observed |delta| (+1 smoothing); identical to ``sacrebleu --paired-bs``
    for the same seed. ``delta_ci`` is the 95% percentile interval of the resampled B - A.
    """
    n = len(refs)
    if not (len(hyps_a) == len(hyps_b) == n):
        raise UserError(
            f"system A has {len(hyps_a)} lines, system B {len(hyps_b)}, references {n}: all must be line-aligned"
        )
    if n == 0:
        raise UserError("nothing to compare: the reference file is empty")
    if n_samples < 1:
        raise UserError(f"--n-samples {n_samples}: need at least 1 resample (1000 is usual)")
    metric, ha, r = _prepare(spec, hyps_a, refs)
    _, hb, _ = _prepare(spec, hyps_b, refs)
    stats_a = _sentence_stats(metric, ha, r)
    stats_b = _sentence_stats(metric, hb, r)
    score_a = metric._compute_score_from_stats(stats_a.sum(0)).score
    score_b = metric._compute_score_from_stats(stats_b.sum(0)).score

    rng = np.random.default_rng(seed)
    idxs = rng.choice(n, size=(n_samples, n), replace=True)  # same draw as sacrebleu's paired-bs
    # how often each line is drawn in each resample: (n_samples, n), so sums are one matmul
    flat = (idxs + (np.arange(n_samples)[:, None] * n)).ravel()
    counts = np.bincount(flat, minlength=n_samples * n).reshape(n_samples, n).astype(np.float64)
    res_a = _resampled_scores(metric, stats_a, counts)
    res_b = _resampled_scores(metric, stats_b, counts)

    diffs = np.abs(res_b - res_a)
    observed = abs(score_b - score_a)
    centred = diffs - diffs.mean()
    if observed == 0 and not diffs.any():
        p_value = 1.0  # identical outputs: no difference can be significant (sacrebleu would give 1/(n+1))
    else:
        p_value = (np.sum(centred > observed) + 1) / (n_samples + 1)
    delta = res_b - res_a

    def interval(x: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(x, [2.5, 97.5])
        return float(lo), float(hi)

    return BootstrapResult(
        metric=spec.name,
        signature=spec.signature(metric, bs=n_samples, seed=seed),
        n_lines=n,
        n_samples=n_samples,
        seed=seed,
        score_a=float(score_a),
        score_b=float(score_b),
        ci_a=interval(res_a),
        ci_b=interval(res_b),
        delta=float(score_b - score_a),
        delta_ci=interval(delta),
        p_value=float(p_value),
        b_wins=float(np.mean(res_b > res_a)),
    )


# ---------------------------------------------------------------------------------------------------
# what the CLI calls


def resolve_metrics(
    names: Sequence[str] | None, spm_model: str | None, tokenize: str | None = None
) -> tuple[list[MetricSpec], list[str]]:
    """Metric specs for ``names``; with no names: chrF++, plus spBLEU when a SentencePiece model is
    known (``--spm-model``, $NLLB_SPM_MODEL or sacrebleu's cache). ``tokenize`` is BLEU's (needs bleu
    among ``names``). Returns (specs, notes for the user)."""
    notes: list[str] = []
    if names:
        keys = list(dict.fromkeys(normalize_metric_name(n) for n in names))
        if tokenize is not None and "bleu" not in keys:
            raise UserError(f"--tokenize {tokenize}: applies to BLEU only; add bleu to --metrics")
        specs = [MetricSpec(n, spm_model, tokenize if n == "bleu" else None) for n in keys]
        return specs, notes
    if tokenize is not None:
        raise UserError(f"--tokenize {tokenize}: applies to BLEU only; add --metrics bleu")
    specs = [MetricSpec("chrf++")]
    if spm_model or default_spm_model():
        specs.append(MetricSpec("spbleu", spm_model))
    else:
        notes.append(f"spBLEU skipped: no FLORES-200 SentencePiece model (pass --spm-model {FLORES200_SPM_NAME})")
    return specs, notes


def metric_arg() -> Any:
    """``--metric``: one corpus metric (score, compare)."""
    return arg("chrf++", "chrf++ (default) | bleu | spbleu", show_default=False)


def tokenize_arg() -> Any:
    """``--tokenize``: the BLEU tokenizer; None picks it by the target language."""
    return arg(
        None,
        "BLEU tokenizer: 13a zh ja-mecab ko-mecab intl char none (default: as sacrebleu -l xx-TGT picks it: "
        "zh for zho_Hans/zho_Hant/yue_Hant, ja-mecab for jpn_Jpan, ko-mecab for kor_Hang, else 13a; without "
        "MeCab installed a note says so and char / 13a stand in); the signature names the one used",
        metavar="TOK",
    )


def tgt_lang_arg() -> Any:
    """``--tgt-lang`` of score and compare: the hypotheses' language, else read from the file names."""
    return arg(
        None,
        "FLORES-200 code of the hypotheses, for the BLEU tokenizer (default: from the file names: "
        "deu_Latn.devtest or eng_Latn-deu_Latn.hyp; else 13a)",
        metavar="CODE",
    )


def spm_model_arg() -> Any:
    """``--spm-model``: the FLORES-200 SentencePiece model for spBLEU."""
    return arg(
        None,
        "SentencePiece model for spBLEU: flores200_sacrebleu_tokenizer_spm.model "
        "(default: $NLLB_SPM_MODEL, else sacrebleu's cached copy if any)",
        metavar="PATH",
    )


@dataclass
class ScoreConfig:
    hyp: str = arg(help="detokenised hypotheses, one per line", required=True)
    ref: str = arg(help="references, line-aligned with --hyp", required=True)
    metric: str = metric_arg()
    tokenize: str | None = tokenize_arg()  # BLEU tokenizer; None: by the target language
    tgt_lang: str | None = tgt_lang_arg()  # the hypotheses' language; None: from the file names, if they say it
    spm_model: str | None = spm_model_arg()


def file_target(tgt_lang: str | None, *paths: str | os.PathLike) -> str | None:
    """``--tgt-lang`` (checked), else the language the file names state (the reference's first)."""
    return check_code(tgt_lang, "--tgt-lang") if tgt_lang else target_from_names(*paths)


def score_files(cfg: ScoreConfig, notes: list[str] | None = None) -> Score:
    """Corpus score of one hypothesis file against one reference file; ``notes`` collects what the user
    should know (a BLEU tokenizer that is not installed)."""
    spec = MetricSpec(cfg.metric, cfg.spm_model, cfg.tokenize)
    spec, note = spec.for_target(file_target(cfg.tgt_lang, cfg.ref, cfg.hyp))
    if note and notes is not None:
        notes.append(note)
    hyps, refs = read_aligned(cfg.hyp, cfg.ref)
    if not refs:
        raise UserError(f"{cfg.hyp} and {cfg.ref} are empty: nothing to score")
    return corpus_score(hyps, refs, spec)


@dataclass
class CompareConfig:
    baseline: str = arg(
        help="baseline: a hypothesis file, or a generation directory", positional=True, metavar="A"
    )  # system A
    system: str = arg(help="system to test: same kind as A", positional=True, metavar="B")  # system B
    ref: str = arg(help="reference file, or the split directory when A and B are directories", required=True)
    metric: str = metric_arg()
    n_samples: int = arg(1000, "bootstrap resamples (default 1000)", show_default=False)
    seed: int = arg(12345, "random seed (default 12345, sacrebleu's)", show_default=False)
    tokenize: str | None = tokenize_arg()  # BLEU tokenizer; None: by the target language
    tgt_lang: str | None = tgt_lang_arg()  # two files: their language (default: from the file names)
    spm_model: str | None = spm_model_arg()


def compare(cfg: CompareConfig, notes: list[str] | None = None) -> list[tuple[str, BootstrapResult]]:
    """Paired bootstrap of B against A: one (name, result) for two files, one per shared direction for
    two generation directories. ``notes`` collects what the user should know."""
    from eval import gendir

    base = MetricSpec(cfg.metric, cfg.spm_model, cfg.tokenize)
    notes = [] if notes is None else notes

    def spec_for(tgt: str | None) -> MetricSpec:
        spec, note = base.for_target(tgt)
        if note and note not in notes:
            notes.append(note)
        return spec

    a, b = Path(cfg.baseline), Path(cfg.system)
    if a.is_dir() or b.is_dir():
        if not (a.is_dir() and b.is_dir()):
            raise UserError(f"{a} and {b}: compare two hypothesis files or two generation directories, not one of each")
        ref_dir = gendir.check_ref_dir(cfg.ref)
        dirs_a = dict(gendir.find_directions(a))
        dirs_b = dict(gendir.find_directions(b))
        shared = [d for d in dirs_a if d in dirs_b]
        if not shared:
            raise UserError(f"{a} and {b} have no direction in common (files {{src}}-{{tgt}}.hyp)")
        out = []
        for d in shared:
            ha, hb, r = read_aligned(dirs_a[d], dirs_b[d], gendir.ref_path(ref_dir, d.tgt))
            out.append((d.name, paired_bootstrap(ha, hb, r, spec_for(d.tgt), cfg.n_samples, cfg.seed)))
        return out
    ha, hb, r = read_aligned(a, b, cfg.ref)
    spec = spec_for(file_target(cfg.tgt_lang, cfg.ref, b, a))
    return [(f"{a.name} vs {b.name}", paired_bootstrap(ha, hb, r, spec, cfg.n_samples, cfg.seed))]
