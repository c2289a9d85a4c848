"""``mt-eval translate-test``: translate-test vs zero-shot vs translate-train classification, per language.

Artetxe et al. 2023, "Revisiting machine translation for cross-lingual classification" (arXiv 2305.14240):
with strong MT, translating the test set into English and using an English classifier (translate-test)
beats zero-shot transfer of a multilingual model. Three systems, one classifier family, per language:

* ``translate_test``: our MT translates each test sentence into English; the English classifier labels it.
* ``zero_shot``: the English classifier applied directly to the target-language sentence embeddings.
* ``translate_train``: our MT translates the English training set into the target language; a classifier
  trained on those (embedded) translations labels the target-language test sentences.

The classifier is multinomial logistic regression (scikit-learn) on L2-normalised sentence embeddings of
one multilingual encoder (``mining`` encoders: e5 by default). Why this one for all three: zero-shot needs
features shared across languages, so the classifier must sit on multilingual embeddings; using the same
features and learner for the two MT systems makes the comparison about the *data path* (MT or not), not
the classifier. It trains in seconds on a few thousand sentences. The regularisation ``C`` is chosen once,
by 3-fold cross-validation on the English training set (``C_GRID``), and used for every system: zero-shot
has no target-language dev set, so nothing is tuned on the test languages. On the gettext task with e5,
plain LR beat LR after feature standardisation (64% vs 58-63% English accuracy), so features are used as
the encoder gives them.

Outputs in ``RUN_DIR``::

    translate_test.csv     lang,tier,method,metric,score,n (long form; mt-eval report reads it)
    translate_test.md      accuracy and macro-F1 tables, averages, translate-test - zero-shot gap by tier
    translate_test.json    config, chosen C, per-language scores, English reference, notes
    translate_test/predictions/{lang}.tsv   gold, each system's label, the sentence and its MT
    translate_test/cache/  translations and embeddings (atomic files keyed by content; a re-run is cheap)

Scores are fractions in [0, 1]. Macro-F1 averages over the labels of that language's test set.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from eval.classification import Task, read_task
from mt.common.errors import UserError, warn_once
from mt.common.files import atomic_write, file_identity
from mt.common.flags import arg
from mt.common.langs import ENGLISH, check_code

METHODS = ("zero_shot", "translate_test", "translate_train")
MT_METHODS = ("translate_test", "translate_train")
METRICS = ("accuracy", "macro_f1")
C_GRID = (1.0, 10.0, 100.0)
DEFAULT_C = 10.0  # when the English set is too small to cross-validate
CHUNK = 512  # sentences per cached translation file: a killed run loses at most one chunk per direction


@dataclass
class TranslateTestConfig:
    task: str = arg(help="task directory (mt-eval build-classification, or your own files)", required=True)
    out: str = arg(help="run directory for the results", required=True, metavar="RUN_DIR")
    mt_checkpoint: str | None = arg(  # needed by translate_test and translate_train
        None, "mt-train checkpoint that translates from and into eng_Latn", aliases=("--path",)
    )
    encoder: str = arg(
        "e5",
        "sentence encoder: e5 (default), e5:query, use, laser2:DIR, ngram, or an encoder checkpoint",
        show_default=False,
    )
    methods: list[str] = arg(
        list(METHODS),
        f"systems to run (default: {' '.join(METHODS)})",
        nargs="+",
        metavar="M",
        type=str,
        show_default=False,
    )
    langs: list[str] = arg(  # []: every test language of the task
        [], "comma-separated test languages (default: every test file of the task)"
    )
    stats: str | None = arg(  # corpus stats.tsv (or the corpus dir) for tiers; default: the task's task.json
        None, "corpus stats.tsv or corpus directory for resource tiers (default: task.json)"
    )
    beam: int = arg(4, "beam size (default: %(default)s)")
    lenpen: float = arg(1.0, "length penalty (default: %(default)s)")
    max_tokens: int = arg(4096, "source tokens per translation batch (default: %(default)s)")
    bf16: bool = arg(False, "bfloat16 autocast for MT (and LASER encoders): ~4x faster on CPU")
    device: str = arg("cpu", "cpu (default), cuda, cuda:1 ...", show_default=False)
    data: str | None = arg(  # dict.txt/spm.model directory of the checkpoint
        None, "directory with the checkpoint's dict.txt and spm.model (default: found from it)"
    )
    spm_model: str | None = arg(None, "SentencePiece model of the checkpoint (default: found from it)")
    C: float | None = arg(  # None: 3-fold CV over C_GRID on the English training set
        None, "logistic-regression inverse regularisation (default: 3-fold CV on English over 1, 10, 100)"
    )
    seed: int = arg(1, "random seed (default: %(default)s)")
    threads: int = arg(0, "torch and encoder threads (default: every CPU, OpenMP waiting passively)")
    encoder_batch_size: int = arg(0, "sentences per encoder batch (default: encoder's)")
    progress: bool = True


@dataclass
class LangResult:
    lang: str
    tier: str | None
    n: int
    labels: int
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> metric -> score
    notes: list[str] = field(default_factory=list)


@dataclass
class TranslateTestResult:
    out: Path
    C: float
    cv: dict[str, float]
    english: dict[str, float] | None
    langs: list[LangResult]
    notes: list[str]
    paths: list[Path]
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- caching


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def _texts_digest(texts: list[str]) -> str:
    return _digest(len(texts), "\n".join(texts))


def _file_stamp(path: str | os.PathLike) -> str:
    """Identity of a model file (its content: ``mt.common.files.file_identity``) or directory (path, size and mtime)."""
    p = Path(path).resolve()
    if p.is_file():
        return f"{p}:{json.dumps(file_identity(p), sort_keys=True)}"
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path, "wb") as fh:
        np.save(fh, arr)


class EmbeddingCache:
    """Embeddings of (texts, lang) under ``root``, one ``.npy`` per distinct input."""

    def __init__(self, encoder, spec: str, root: Path):
        self.encoder, self.root = encoder, root
        stamp = _file_stamp(spec) if os.path.exists(spec) else ""
        self.key = _digest("emb", spec, stamp)

    def __call__(self, texts: list[str], lang: str) -> np.ndarray:
        path = self.root / self.key / f"{lang}.{_texts_digest(texts)}.npy"
        if path.is_file():
            try:
                arr = np.load(path)
                if arr.shape[0] == len(texts):
                    return arr
            except (OSError, ValueError):
                pass  # a damaged cache file is recomputed
        arr = np.asarray(self.encoder.encode(list(texts), lang), dtype=np.float32)
        _save_npy(path, arr)
        return arr


class TranslationCache:
    """Translations by our MT model, cached per chunk of :data:`CHUNK` sentences."""

    def __init__(self, cfg: TranslateTestConfig, root: Path):
        self.cfg = cfg
        self.key = _digest(
            "mt", _file_stamp(cfg.mt_checkpoint), cfg.beam, cfg.lenpen, cfg.bf16, cfg.data, cfg.spm_model
        )
        self.root = root / self.key
        self._translator = None
        self.warn = warn_once("mt-eval translate-test")

    @property
    def translator(self):
        if self._translator is None:
            from mt.generate.translator import Translator

            self._translator = Translator(
                self.cfg.mt_checkpoint,
                device=self.cfg.device,
                bf16=self.cfg.bf16,
                data=self.cfg.data,
                spm_model=self.cfg.spm_model,
                threads=self.cfg.threads,
            )
        return self._translator

    def langs(self) -> list[str]:
        return self.translator.langs

    def __call__(self, texts: list[str], src: str, tgt: str, desc: str) -> list[str]:
        out: list[str] = []
        bar = tqdm(total=len(texts), desc=desc, unit="sent", disable=not self.cfg.progress, file=sys.stderr)
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            path = self.root / f"{src}-{tgt}.{_texts_digest(chunk)}.txt"
            if path.is_file():
                lines = path.read_text(encoding="utf-8").split("\n")[:-1]
                if len(lines) == len(chunk):
                    out += lines
                    bar.update(len(chunk))
                    continue
            hyps = self._translate(chunk, src, tgt, bar)
            with atomic_write(path) as fh:
                fh.writelines(" ".join(h.split()) + "\n" for h in hyps)
            out += [" ".join(h.split()) for h in hyps]
        bar.close()
        return out

    def _translate(self, texts: list[str], src: str, tgt: str, bar) -> list[str]:
        from mt.generate.search import SearchConfig

        tr = self.translator
        res = tr.translate_ids(
            tr.encode(texts),
            src,
            tgt,
            SearchConfig(beam=self.cfg.beam, lenpen=self.cfg.lenpen),
            max_tokens=self.cfg.max_tokens,
            on_batch=lambda idx, _: bar.update(len(idx)),
            warn=self.warn,
        )
        return [tr.detokenize(hs[0].tokens) if hs else "" for hs in res]


# ------------------------------------------------------------------------------------------- classifier


def load_encoder(spec: str, threads: int = 0, batch_size: int = 0, bf16: bool = False, device: str | None = None):
    """The ``mining`` encoders (e5, use, ngram[:DIM], laser2:DIR, ...) with this module's thread/batch knobs."""
    from mining.encoders import load_encoder as _load

    kw: dict = {"bf16": bf16}
    if threads:
        kw["threads"] = threads
    if batch_size:
        kw["batch_size"] = batch_size
    if device:
        kw["device"] = device
    return _load(spec, **kw)


def make_classifier(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000, random_state=seed)


def choose_C(X: np.ndarray, y: list[str], seed: int) -> tuple[float, dict[str, float]]:
    """C with the best mean 3-fold accuracy on the English training set (ties: the smaller C)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    smallest = min(np.unique(np.asarray(y), return_counts=True)[1])
    if smallest < 2:
        return DEFAULT_C, {}
    folds = StratifiedKFold(n_splits=min(3, int(smallest)), shuffle=True, random_state=seed)
    scores = {str(C): float(cross_val_score(make_classifier(C, seed), X, y, cv=folds).mean()) for C in C_GRID}
    best = max(C_GRID, key=lambda C: (round(scores[str(C)], 6), -C))
    return best, scores


def score(gold: list[str], pred: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(gold))
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
    }


# ------------------------------------------------------------------------------------------------- run


def _check(cfg: TranslateTestConfig) -> None:
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad or not cfg.methods:
        raise UserError(f"--methods {' '.join(cfg.methods) or '(none)'}: choose from {', '.join(METHODS)}")
    if any(m in MT_METHODS for m in cfg.methods):
        if not cfg.mt_checkpoint:
            raise UserError(
                "translate_test and translate_train need --mt-checkpoint CKPT (an mt-train checkpoint); "
                "or run --methods zero_shot alone"
            )
        if not Path(cfg.mt_checkpoint).is_file():
            raise UserError(f"--mt-checkpoint {cfg.mt_checkpoint}: no such file")
    for lang in cfg.langs:
        check_code(lang, "--langs")
    if cfg.C is not None and cfg.C <= 0:
        raise UserError(f"--C {cfg.C}: must be > 0")
    if cfg.beam < 1:
        raise UserError(f"--beam {cfg.beam}: must be >= 1")


def _tiers(cfg: TranslateTestConfig, task: Task) -> dict[str, str]:
    if cfg.stats:
        path = Path(cfg.stats)
        path = path / "stats.tsv" if path.is_dir() else path
        from eval.gendir import load_stats

        return {str(k): str(v) for k, v in load_stats(path)["tier"].items()}
    return {str(k): str(v) for k, v in (task.meta.get("tiers") or {}).items()}


def run_translate_test(cfg: TranslateTestConfig) -> TranslateTestResult:
    """Run the three systems on every test language of ``cfg.task`` and write the outputs (module docstring)."""
    t0 = time.monotonic()
    _check(cfg)
    task = read_task(cfg.task, cfg.langs or None)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    work = out / "translate_test"
    tiers = _tiers(cfg, task)
    methods = [m for m in METHODS if m in cfg.methods]
    notes: list[str] = []
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)

    encoder = load_encoder(
        cfg.encoder, cfg.threads, cfg.encoder_batch_size, cfg.bf16, cfg.device if cfg.device != "cpu" else None
    )
    embed = EmbeddingCache(encoder, cfg.encoder, work / "cache" / "emb")
    mt = TranslationCache(cfg, work / "cache" / "mt") if any(m in MT_METHODS for m in methods) else None
    mt_langs = set(mt.langs()) if mt is not None else set()
    if mt is not None and ENGLISH not in mt_langs:
        raise UserError(
            f"--mt-checkpoint {cfg.mt_checkpoint}: the model has no {ENGLISH} language token; "
            "translate-test needs a model that translates into and out of English"
        )

    train_text = [e.text for e in task.train]
    y_train = [e.label for e in task.train]
    X_train = _embed(embed, train_text, ENGLISH, "embed English train", cfg.progress)
    if cfg.C is None:
        C, cv = choose_C(X_train, y_train, cfg.seed)
    else:
        C, cv = cfg.C, {}
    clf_en = make_classifier(C, cfg.seed).fit(X_train, y_train)
    print(
        f"English classifier: {len(y_train)} examples, {len(set(y_train))} labels, C={C:g}"
        + (f" (3-fold CV accuracy {', '.join(f'C={k}: {v:.3f}' for k, v in cv.items())})" if cv else ""),
        file=sys.stderr,
    )
    english = None
    if ENGLISH in task.test:
        ex = task.test[ENGLISH]
        english = score(
            [e.label for e in ex],
            list(clf_en.predict(_embed(embed, [e.text for e in ex], ENGLISH, "embed English test", cfg.progress))),
        )

    results: list[LangResult] = []
    pred_paths: list[Path] = []
    for lang in task.test_langs:
        ex = task.test[lang]
        gold = [e.label for e in ex]
        texts = [e.text for e in ex]
        res = LangResult(lang, tiers.get(lang), len(ex), len(set(gold)))
        preds: dict[str, list[str]] = {}
        mt_text: list[str] = []
        X_test = None
        if "zero_shot" in methods or "translate_train" in methods:
            X_test = _embed(embed, texts, lang, f"embed {lang} test", cfg.progress)
        if "zero_shot" in methods:
            preds["zero_shot"] = list(clf_en.predict(X_test))
        can_mt = mt is not None and lang in mt_langs
        if mt is not None and not can_mt:
            res.notes.append(f"the MT model has no {lang} token: translate_test/translate_train not run")
        if can_mt and "translate_test" in methods:
            mt_text = mt(texts, lang, ENGLISH, f"MT {lang}->{ENGLISH} test")
            preds["translate_test"] = list(
                clf_en.predict(_embed(embed, mt_text, ENGLISH, f"embed MT {lang} test", cfg.progress))
            )
        if can_mt and "translate_train" in methods:
            tt = mt(train_text, ENGLISH, lang, f"MT {ENGLISH}->{lang} train")
            X_tt = _embed(embed, tt, lang, f"embed MT {lang} train", cfg.progress)
            clf = make_classifier(C, cfg.seed).fit(X_tt, y_train)
            preds["translate_train"] = list(clf.predict(X_test))
        res.scores = {m: score(gold, p) for m, p in preds.items()}
        results.append(res)
        pred_paths.append(_write_predictions(work / "predictions" / f"{lang}.tsv", gold, preds, texts, mt_text))
        line = ", ".join(f"{m} {res.scores[m]['accuracy']:.3f}" for m in methods if m in res.scores)
        print(f"{lang}: {res.n} examples, {res.labels} labels: accuracy {line}", file=sys.stderr)

    for r in results:
        notes += [f"{r.lang}: {n}" for n in r.notes]
    res = TranslateTestResult(out, C, cv, english, results, notes, [], time.monotonic() - t0)
    res.paths = _write_outputs(res, cfg, task, methods) + pred_paths
    return res


def _embed(embed: Callable, texts: list[str], lang: str, desc: str, progress: bool) -> np.ndarray:
    if progress:
        print(f"{desc}: {len(texts)} sentences", file=sys.stderr)
    return embed(texts, lang)


def _write_predictions(
    path: Path, gold: list[str], preds: dict[str, list[str]], texts: list[str], mt_text: list[str]
) -> Path:
    methods = list(preds)
    with atomic_write(path) as fh:
        fh.write("\t".join(["gold", *methods, "text", "mt_english"]) + "\n")
        for i, g in enumerate(gold):
            fh.write("\t".join([g, *(preds[m][i] for m in methods), texts[i], mt_text[i] if mt_text else ""]) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- outputs


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summary_rows(results: list[LangResult], methods: list[str], metric: str) -> list[dict]:
    """Averages over languages: all, then per tier (high, mid, low, unknown), with the mean TT - ZS gap.

    Only languages every system ran on are averaged (a language the MT model lacks has zero-shot only),
    so the systems are compared on the same languages; when there is none, each system's own languages.
    """
    complete = [r for r in results if all(m in r.scores for m in methods)]
    results = complete or results
    groups: list[tuple[str, list[LangResult]]] = [("all", results)]
    for tier in ("high", "mid", "low"):
        groups.append((tier, [r for r in results if r.tier == tier]))
    unknown = [r for r in results if r.tier not in ("high", "mid", "low")]
    if unknown and len(unknown) < len(results):
        groups.append(("no tier", unknown))
    rows = []
    for name, rs in groups:
        if not rs:
            continue
        row: dict = {"group": name, "langs": len(rs)}
        for m in methods:
            row[m] = _mean([r.scores[m][metric] for r in rs if m in r.scores])
        gaps = [
            r.scores["translate_test"][metric] - r.scores["zero_shot"][metric]
            for r in rs
            if "translate_test" in r.scores and "zero_shot" in r.scores
        ]
        row["gap"] = _mean(gaps)
        rows.append(row)
    return rows


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _gap(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}"


def markdown(res: TranslateTestResult, methods: list[str], task: Task, cfg: TranslateTestConfig) -> str:
    from eval.tables import markdown_table

    titles = {"zero_shot": "zero-shot", "translate_test": "translate-test", "translate_train": "translate-train"}
    has_gap = "translate_test" in methods and "zero_shot" in methods
    lines = [
        "# Translate-test vs zero-shot vs translate-train",
        "",
        f"Task `{task.path}` ({task.meta.get('source', 'custom')}; {len(task.labels)} labels, "
        f"{len(task.train)} English training examples); encoder `{cfg.encoder}`; classifier: logistic "
        f"regression, C={res.C:g}"
        + (" (3-fold CV on English)" if res.cv else "")
        + "; MT "
        + (f"`{cfg.mt_checkpoint}` (beam {cfg.beam}{', bf16' if cfg.bf16 else ''})" if cfg.mt_checkpoint else "none")
        + ". Scores in %.",
        "",
    ]
    if res.english:
        lines += [
            f"English test (no transfer): accuracy {_pct(res.english['accuracy'])}, "
            f"macro-F1 {_pct(res.english['macro_f1'])}.",
            "",
        ]
    for k, metric in enumerate(METRICS, start=1):
        header = ["lang", "tier", "n", "labels", *(titles[m] for m in methods)] + (["TT − ZS"] if has_gap else [])
        rows = []
        for r in res.langs:
            row = [
                r.lang,
                r.tier or "–",
                r.n,
                r.labels,
                *(_pct(r.scores[m][metric]) if m in r.scores else "–" for m in methods),
            ]
            if has_gap:
                row.append(
                    _gap(
                        r.scores["translate_test"][metric] - r.scores["zero_shot"][metric]
                        if "translate_test" in r.scores and "zero_shot" in r.scores
                        else None
                    )
                )
            rows.append(row)
        for s in summary_rows(res.langs, methods, metric):
            row = [
                f"**average ({s['group']}, {s['langs']} lang{'s' if s['langs'] > 1 else ''})**",
                "",
                "",
                "",
                *(_pct(s[m]) for m in methods),
            ]
            if has_gap:
                row.append(_gap(s["gap"]))
            rows.append(row)
        lines += [
            f"**Table {k}.** {'Accuracy' if metric == 'accuracy' else 'Macro-F1'} per language "
            "(labels: how many labels its test set has; averages: over the languages every system ran on).",
            "",
            markdown_table(header, rows, align="llrr" + "r" * (len(header) - 4)),
            "",
        ]
    if res.notes:
        lines += ["Notes:", "", *(f"- {n}" for n in res.notes), ""]
    return "\n".join(lines)


def _write_outputs(res: TranslateTestResult, cfg: TranslateTestConfig, task: Task, methods: list[str]) -> list[Path]:
    out = res.out
    csv_path = out / "translate_test.csv"
    with atomic_write(csv_path) as fh:
        fh.write("lang,tier,method,metric,score,n\n")
        for r in res.langs:
            for m in methods:
                for metric in METRICS:
                    if m in r.scores:
                        fh.write(f"{r.lang},{r.tier or ''},{m},{metric},{r.scores[m][metric]:.4f},{r.n}\n")
    md_path = out / "translate_test.md"
    with atomic_write(md_path) as fh:
        fh.write(markdown(res, methods, task, cfg))
    json_path = out / "translate_test.json"
    conf = asdict(cfg)
    conf.pop("progress")
    payload = {
        "config": conf,
        "task": {
            "path": str(task.path),
            "source": task.meta.get("source"),
            "labels": task.labels,
            "train": len(task.train),
        },
        "C": res.C,
        "cv_accuracy": res.cv,
        "english": res.english,
        "langs": [asdict(r) for r in res.langs],
        "averages": {metric: summary_rows(res.langs, methods, metric) for metric in METRICS},
        "notes": res.notes,
        "seconds": round(res.seconds, 1),
    }
    with atomic_write(json_path) as fh:
        json.dump(payload, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return [csv_path, md_path, json_path]
