"""BUCC 2018-style bitext-mining sets: two builders, a reader, and the scorer.

File layout (exactly BUCC 2018's, so the real BUCC sets plug in)::

    {dir}/{src}-{tgt}.{split}.{src}    id<TAB>sentence     e.g. de-en.training.de, lines "de-000000001<TAB>..."
    {dir}/{src}-{tgt}.{split}.{tgt}    id<TAB>sentence
    {dir}/{src}-{tgt}.{split}.gold     src_id<TAB>tgt_id   the hidden translation pairs
    {dir}/info.json                    per pair: where it was built from (``source``), sizes, seed

Codes in file names are FLORES-200 (``deu_Latn-eng_Latn.test.deu_Latn``), always ``{lang}-eng_Latn``.
Splits ``training`` (to tune the threshold, as BUCC) and ``test`` hold disjoint sentences.

Builders:

* from the gettext catalogues (:func:`build_from_catalogues`): the (English msgid, translated msgstr)
  pairs of ``/usr/share/locale/*/LC_MESSAGES/*.mo``, read, cleaned and mapped to FLORES-200 codes by
  the corpus builder's own code (:mod:`mt.data.mo`, :mod:`mt.data.clean`, :mod:`mt.data.locales`
  through :func:`mt.data.gettext_corpus.read_catalogues`), so every language the corpus knows gets a
  set. A few translated pairs (the gold) are hidden among many sentences of the same catalogues that
  have no translation on the other side: the foreign side gets translations of English strings kept
  off the English side, the English side gets English strings with no translation on the foreign side.
* from a built corpus (:func:`build_from_corpus`): the hidden-parallel ``mono/eng_Latn-{lang}.*`` files
  and their ``.gold.tsv`` that ``mt-data build gettext`` writes, i.e. exactly what the demo mines. Gold
  pairs and the other lines of each side are dealt into the splits at random (seeded); a sentence id
  is its 1-based line number in the mono file (``deu-000000012`` is line 12), so results map back.

Scorer: precision / recall / F1 of candidate pairs against the gold, at a given threshold, at the
best one (LASER's ``BuccOptimize``: midpoint between consecutive candidate scores; an *oracle* when it
is chosen on the scored gold itself), k-fold (each part of the gold scored at the threshold tuned on
the other parts, :func:`kfold_prf`), and the xsim error
rate (LASER ``xsim.py``: share of gold source sentences whose best target, by margin or cosine among
the gold targets, is not their translation).
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from mt.common.errors import UserError, located
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import ENGLISH
from mt.common.textio import read_lines
from mt.data import layout
from mt.data.clean import CleanConfig, clean_source
from mt.data.locales import LOCALE_CODES
from mt.data.mo import MoFormatError, read_mo

SPLITS = ("training", "test")
LOCALE_DIR = Path("/usr/share/locale")

# BUCC 2018's own codes -> FLORES-200, so encoders get the language they expect on the real sets
BUCC_TO_FLORES = {"de": "deu_Latn", "fr": "fra_Latn", "ru": "rus_Cyrl", "zh": "zho_Hans", "en": "eng_Latn"}

# --------------------------------------------------------------------------------------------------
# sentences from the gettext catalogues (through mt.data: one reader, one set of cleaning rules)


def _key(text: str) -> str:
    """Comparison key: case and punctuation do not make two strings different."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _clean_config(min_words: int, max_words: int) -> CleanConfig:
    return CleanConfig(min_words=min_words, max_words=max_words)


def catalogue_pairs(
    lang: str, locale_dir: str | os.PathLike = LOCALE_DIR, min_words: int = 3, max_words: int = 60
) -> dict[str, list[str]]:
    """English sentence -> its cleaned translations into ``lang`` (most frequent first), from every
    locale folder that maps to ``lang`` (the corpus builder's reading, cleaning and locale rules)."""
    from mt.data.gettext_corpus import discover, read_catalogues
    from mt.data.locales import classify_locale

    by_locale, _ = discover(locale_dir)
    present = {classify_locale(loc).code for loc in by_locale}
    if lang not in present:
        if lang not in set(LOCALE_CODES.values()):
            raise UserError(
                f"no gettext locale maps to {lang!r} (mt.data.locales knows "
                f"{len(set(LOCALE_CODES.values()))} codes; add the locale to LOCALE_CODES)"
            )
        raise UserError(
            f"{locale_dir}: no .mo catalogues for {lang} (languages there: "
            f"{', '.join(sorted(c for c in present if c))}); install the translations or pass "
            "--locale-dir"
        )
    cats = read_catalogues(locale_dir, {lang}, _clean_config(min_words, max_words), progress=False, jobs=1)
    trans_by_en = cats.pairs.get(lang, {})
    return {en: sorted(trs, key=lambda t: (-trs[t], t)) for en, trs in trans_by_en.items()}


def english_pool(locale_dir: str | os.PathLike = LOCALE_DIR, min_words: int = 3, max_words: int = 60) -> list[str]:
    """Every English string of every catalogue that passes the English-side cleaning rules (the English
    side's non-parallel sentences). Corrupt catalogues are skipped, as the corpus builder does."""
    cfg = _clean_config(min_words, max_words)
    seen: set[str] = set()
    cache: dict[str, str | None] = {}
    for path in sorted(Path(locale_dir).glob("*/LC_MESSAGES/*.mo")):
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            cat = read_mo(path)
        except MoFormatError:
            continue
        for en, _ in cat.pairs():
            if en not in cache:
                text, reason = clean_source(en, cfg)
                cache[en] = text if reason is None else None
    return sorted({t for t in cache.values() if t})


# --------------------------------------------------------------------------------------------------
# building


GETTEXT_DATA = "work/bucc"  # default folder of sets built from the gettext catalogues
CORPUS_DATA = "work/bucc-corpus"  # ... and of sets built from a corpus (never mixed with gettext ones)


@dataclass
class BuildConfig:
    """How ``mine-eval bucc-build`` (and ``bucc``, when the set is missing) builds a set."""

    out: str = arg(GETTEXT_DATA, f"output folder (default: {GETTEXT_DATA}, or {CORPUS_DATA} with --corpus)")
    # languages mined against eng_Latn; ["all"]: every language of --corpus (or of the locale tree)
    langs: list[str] = arg(
        ["deu_Latn", "fra_Latn", "rus_Cyrl", "zho_Hans", "xho_Latn"],
        "languages mined against eng_Latn, or 'all' (every language of the corpus or locale tree)",
    )
    # clipped for small languages; catalogues only
    size: int = arg(5_000, "sentences per side per split")
    gold: int = arg(500, "hidden translation pairs per split")  # scaled down with size; catalogues only
    seed: int = arg(1234, "shuffling seed")
    locale_dir: str = arg(str(LOCALE_DIR), "gettext catalogues")
    corpus: str | None = arg(  # build from {corpus}/mono instead of the catalogues
        None,
        "build from this corpus's mono/eng_Latn-{lang}.* hidden-parallel files and their "
        ".gold.tsv (mt-data build gettext) instead of the catalogues; --size/--gold do not apply",
    )
    min_words: int = 3  # English-side word limits of the catalogue builder
    max_words: int = 60
    splits: tuple[str, ...] = SPLITS


def default_out(corpus: str | None) -> str:
    """Where sets go when no folder is given: gettext and corpus sets never share one."""
    return CORPUS_DATA if corpus else GETTEXT_DATA


def bucc_files(dir: str | Path, src: str, tgt: str, split: str) -> dict[str, Path]:
    base = Path(dir) / f"{src}-{tgt}.{split}"
    return {"src": Path(f"{base}.{src}"), "tgt": Path(f"{base}.{tgt}"), "gold": Path(f"{base}.gold")}


def source_of(cfg: BuildConfig) -> str:
    """What a set is built from, as recorded in info.json (a data folder never mixes two origins)."""
    if cfg.corpus:
        return f"corpus:{Path(cfg.corpus).resolve()}"
    return f"gettext:{Path(cfg.locale_dir).resolve()}"


def read_info(dir: str | Path) -> dict:
    path = Path(dir) / "info.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, or not UTF-8
        raise UserError(f"{path}: corrupt ({exc}); delete it and rebuild the sets") from None
    if not isinstance(info, dict) or not isinstance(info.get("pairs", {}), dict):
        raise UserError(
            f"{path}: not a BUCC set description (expected a JSON object with 'pairs'); delete it and rebuild the sets"
        )
    return info


def _write_tsv(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    with atomic_write(path) as fh:
        for a, b in rows:
            fh.write(f"{a}\t{b}\n")


def _bucc_id_prefix(code: str) -> str:
    return code.split("_")[0]


def _write_split(
    out: str | Path,
    lang: str,
    split: str,
    src_side: list[tuple[str, object]],
    tgt_side: list[tuple[str, object]],
    src_ids: list[str] | None = None,
    tgt_ids: list[str] | None = None,
) -> dict:
    """Write one split. Sides are ``(sentence, key)`` in file order; equal non-None keys across the
    sides make the gold pairs. Ids default to ``{code}-{row:09d}``, 1-based."""
    src_code, tgt_code = _bucc_id_prefix(lang), _bucc_id_prefix(ENGLISH)
    src_ids = src_ids or [f"{src_code}-{i + 1:09d}" for i in range(len(src_side))]
    tgt_ids = tgt_ids or [f"{tgt_code}-{i + 1:09d}" for i in range(len(tgt_side))]
    files = bucc_files(out, lang, ENGLISH, split)
    _write_tsv(files["src"], zip(src_ids, (text for text, _ in src_side)))
    _write_tsv(files["tgt"], zip(tgt_ids, (text for text, _ in tgt_side)))
    tgt_by_key = {key: i for i, (_, key) in zip(tgt_ids, tgt_side) if key is not None}
    gold = sorted((i, tgt_by_key[key]) for i, (_, key) in zip(src_ids, src_side) if key is not None)
    _write_tsv(files["gold"], gold)
    return {"src": len(src_side), "tgt": len(tgt_side), "gold": len(gold)}


def build_pair(lang: str, cfg: BuildConfig, pool: list[str]) -> dict:
    """Write the BUCC files of ``{lang}-eng_Latn`` for every split from the catalogues; returns counts."""
    ldir = Path(cfg.locale_dir)
    pairs = catalogue_pairs(lang, ldir, cfg.min_words, cfg.max_words)
    # one translation per English string, and no translation shared by two English strings
    by_foreign: dict[str, set[str]] = defaultdict(set)
    for en, trs in pairs.items():
        for tr in trs:
            by_foreign[_key(tr)].add(_key(en))
    chosen: dict[str, str] = {}
    used_foreign: set[str] = set()
    for en in sorted(pairs):
        tr = pairs[en][0]
        if _key(tr) not in used_foreign and len(by_foreign[_key(tr)]) == 1:
            chosen[en] = tr
            used_foreign.add(_key(tr))
    english = sorted(chosen, key=_key)
    rng = random.Random(f"{cfg.seed}-{lang}")
    rng.shuffle(english)
    nsplit = len(cfg.splits)
    size = min(cfg.size, len(english) // nsplit)
    gold = max(1, round(cfg.gold * size / cfg.size)) if size else 0
    if size < 20:
        raise UserError(
            f"{lang}: only {len(english)} usable translated strings in {ldir}; too few for a mining benchmark"
        )
    # English-side noise may not be a translation of anything on the foreign side (of any split)
    on_foreign = english[: nsplit * size]
    excluded = {_key(en) for en in on_foreign}
    for en in on_foreign:
        excluded |= by_foreign[_key(chosen[en])]
    noise_pool = [en for en in pool if _key(en) not in excluded]
    rng.shuffle(noise_pool)
    if len(noise_pool) < nsplit * (size - gold):
        raise UserError(
            f"{lang}: only {len(noise_pool)} English sentences left for the English side; "
            f"use a smaller --size than {size}"
        )
    counts = {}
    for s, split in enumerate(cfg.splits):
        mine = english[s * size : (s + 1) * size]
        gold_en, foreign_only = mine[:gold], mine[gold:]
        en_noise = noise_pool[s * (size - gold) : (s + 1) * (size - gold)]
        src_side = [(chosen[en], en) for en in gold_en] + [(chosen[en], None) for en in foreign_only]
        tgt_side = [(en, en) for en in gold_en] + [(en, None) for en in en_noise]
        rng.shuffle(src_side)
        rng.shuffle(tgt_side)
        counts[split] = _write_split(cfg.out, lang, split, src_side, tgt_side)
    return {
        "lang": lang,
        "source": source_of(cfg),
        "seed": cfg.seed,
        "size": cfg.size,
        "gold": cfg.gold,
        "usable_pairs": len(english),
        "splits": counts,
    }


def _read_mono(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: mono file not found (rebuild the corpus with mt-data build gettext)")
    return list(read_lines(path, progress=False))  # "\n" only: line numbers as wc -l counts them


def read_gold_lines(path: str | Path, n_src: int | None = None, n_tgt: int | None = None) -> list[tuple[int, int]]:
    """A corpus gold file: 0-based ``line_in_src<TAB>line_in_tgt`` per hidden pair, checked against the
    number of lines of each side when given."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: gold file not found (rebuild the corpus with mt-data build gettext)")
    out = []
    for n, line in enumerate(read_lines(path, progress=False), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            i, j = (int(x) for x in parts)
        except ValueError:
            raise located(path, n, "expected line_in_src<TAB>line_in_tgt (two 0-based line numbers)") from None
        if i < 0 or j < 0 or (n_src is not None and i >= n_src) or (n_tgt is not None and j >= n_tgt):
            raise located(
                path,
                n,
                f"line numbers {i}, {j} are outside the mono files ({n_src} and "
                f"{n_tgt} lines): the gold belongs to other files",
            )
        out.append((i, j))
    return out


def corpus_langs(corpus: str | Path) -> list[str]:
    """Languages with hidden-parallel mono files (and gold) against English in a corpus directory."""
    mono = Path(corpus) / "mono"
    if not mono.is_dir():
        raise UserError(f"{mono}: no mono/ folder; build the corpus with `mt-data build gettext --out {corpus}`")
    prefix, suffix = f"{ENGLISH}-", ".gold.tsv"
    return sorted(p.name[len(prefix) : -len(suffix)] for p in mono.glob(f"{prefix}*{suffix}"))


def build_from_corpus_pair(lang: str, cfg: BuildConfig) -> dict:
    """Deal the corpus's ``mono/eng_Latn-{lang}`` set into BUCC splits (gold pairs kept whole)."""
    mp = layout.mono_prefix(cfg.corpus, ENGLISH, lang)
    gold_path = Path(f"{mp}.gold.tsv")
    if not gold_path.is_file():
        raise UserError(
            f"{gold_path}: no hidden-parallel set for {lang} in {cfg.corpus} "
            f"(it has: {', '.join(corpus_langs(cfg.corpus)) or 'none'})"
        )
    eng, foreign = _read_mono(Path(f"{mp}.{ENGLISH}")), _read_mono(Path(f"{mp}.{lang}"))
    gold = read_gold_lines(gold_path, len(eng), len(foreign))
    rng = random.Random(f"{cfg.seed}-{lang}")
    nsplit = len(cfg.splits)
    if len(gold) < 2 * nsplit:
        raise UserError(f"{gold_path}: {len(gold)} gold pairs, too few to split into {', '.join(cfg.splits)}")

    def deal(items: list) -> list[list]:
        items = list(items)
        rng.shuffle(items)
        return [items[s::nsplit] for s in range(nsplit)]

    gold_parts = deal(gold)
    eng_gold, foreign_gold = {i for i, _ in gold}, {j for _, j in gold}
    eng_parts = deal(i for i in range(len(eng)) if i not in eng_gold)
    foreign_parts = deal(j for j in range(len(foreign)) if j not in foreign_gold)
    src_code, tgt_code = _bucc_id_prefix(lang), _bucc_id_prefix(ENGLISH)
    counts = {}
    for s, split in enumerate(cfg.splits):
        key_of_foreign = {j: (i, j) for i, j in gold_parts[s]}
        key_of_eng = {i: (i, j) for i, j in gold_parts[s]}
        f_rows = sorted([*key_of_foreign, *foreign_parts[s]])  # file order = mono file order
        e_rows = sorted([*key_of_eng, *eng_parts[s]])
        counts[split] = _write_split(
            cfg.out,
            lang,
            split,
            [(foreign[j], key_of_foreign.get(j)) for j in f_rows],
            [(eng[i], key_of_eng.get(i)) for i in e_rows],
            src_ids=[f"{src_code}-{j + 1:09d}" for j in f_rows],
            tgt_ids=[f"{tgt_code}-{i + 1:09d}" for i in e_rows],
        )
    return {"lang": lang, "source": source_of(cfg), "seed": cfg.seed, "usable_pairs": len(gold), "splits": counts}


def _all_langs(cfg: BuildConfig) -> list[str]:
    if cfg.corpus:
        return corpus_langs(cfg.corpus)
    from mt.data.gettext_corpus import discover
    from mt.data.locales import classify_locale

    return sorted({classify_locale(loc).code for loc in discover(cfg.locale_dir)[0]})


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Build every language of ``cfg.langs`` (against English) into ``cfg.out``, from ``cfg.corpus`` when
    set, else from the catalogues; records each pair's origin in ``info.json`` (kept across builds)."""
    if not cfg.corpus:
        ldir = Path(cfg.locale_dir)
        if not ldir.is_dir():
            raise UserError(
                f"{ldir}: no gettext locale directory (install the packages' translations, or pass --locale-dir)"
            )
        if cfg.gold >= cfg.size:
            raise UserError(f"--gold {cfg.gold} must be smaller than --size {cfg.size}")
    every = cfg.langs == ["all"]
    langs = _all_langs(cfg) if every else cfg.langs
    pool = english_pool(cfg.locale_dir, cfg.min_words, cfg.max_words) if not cfg.corpus else []
    info = read_info(cfg.out)
    info.update({"format": "bucc2018"})
    info.setdefault("pairs", {})
    for lang in langs:
        try:
            r = build_from_corpus_pair(lang, cfg) if cfg.corpus else build_pair(lang, cfg, pool)
        except UserError as exc:
            if not every:
                raise
            print(f"bucc-build: skipping {lang}: {exc}", file=sys.stderr)
            continue
        info["pairs"][f"{lang}-{ENGLISH}"] = r
        if progress:
            print(
                f"bucc-build: {lang}-{ENGLISH} from {r['source']}: {r['usable_pairs']} usable pairs; "
                + ", ".join(f"{s}: {c['src']}/{c['tgt']} sentences, {c['gold']} gold" for s, c in r["splits"].items()),
                file=sys.stderr,
            )
        with atomic_write(Path(cfg.out) / "info.json") as fh:  # after each pair: a killed build keeps the others
            json.dump(info, fh, indent=1, ensure_ascii=False)
    return info


# --------------------------------------------------------------------------------------------------
# reading


@dataclass
class BuccSet:
    src_lang: str
    tgt_lang: str
    split: str
    src_ids: list[str]
    src_sents: list[str]
    tgt_ids: list[str]
    tgt_sents: list[str]
    gold: set[tuple[str, str]]


def _read_id_tsv(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise UserError(
            f"{path}: BUCC file not found (build a set with `mine-eval bucc-build`, or point --data "
            "at a folder holding the BUCC 2018 files)"
        )
    ids, sents, seen = [], [], set()
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t", 1)
            if len(parts) != 2 or not parts[0]:
                raise located(path, n, "expected id<TAB>sentence")
            if parts[0] in seen:
                raise located(path, n, f"duplicate id {parts[0]!r}")
            seen.add(parts[0])
            ids.append(parts[0])
            sents.append(parts[1])
    return ids, sents


def read_gold(
    path: str | Path, src_ids: set[str] | None = None, tgt_ids: set[str] | None = None
) -> set[tuple[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: gold file not found")
    gold = set()
    for n, line in enumerate(read_lines(path, progress=False), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise located(path, n, "expected src_id<TAB>tgt_id")
        if src_ids is not None and parts[0] not in src_ids:
            raise located(path, n, f"source id {parts[0][:40]!r} is not in the source file")
        if tgt_ids is not None and parts[1] not in tgt_ids:
            raise located(path, n, f"target id {parts[1][:40]!r} is not in the target file")
        gold.add((parts[0], parts[1]))
    return gold


def read_set(dir: str | Path, src: str, tgt: str, split: str, need_gold: bool = True) -> BuccSet:
    files = bucc_files(dir, src, tgt, split)
    src_ids, src_sents = _read_id_tsv(files["src"])
    tgt_ids, tgt_sents = _read_id_tsv(files["tgt"])
    gold = read_gold(files["gold"], set(src_ids), set(tgt_ids)) if (need_gold or files["gold"].is_file()) else set()
    return BuccSet(src, tgt, split, src_ids, src_sents, tgt_ids, tgt_sents, gold)


# --------------------------------------------------------------------------------------------------
# scoring


@dataclass
class PRF:
    threshold: float | None
    precision: float
    recall: float
    f1: float
    extracted: int
    correct: int

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _prf(correct: int, extracted: int, ngold: int, threshold: float | None) -> PRF:
    p = correct / extracted if extracted else 0.0
    r = correct / ngold if ngold else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return PRF(threshold, p, r, f, extracted, correct)


def _dedup_candidates(cands: Iterable[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """One score per (src, tgt) pair (the best), sorted by decreasing score then ids."""
    best: dict[tuple[str, str], float] = {}
    for score, s, t in cands:
        key = (s, t)
        if key not in best or score > best[key]:
            best[key] = float(score)
    return sorted(((sc, s, t) for (s, t), sc in best.items()), key=lambda x: (-x[0], x[1], x[2]))


def prf_at(cands: Iterable[tuple[float, str, str]], gold: set[tuple[str, str]], threshold: float | None) -> PRF:
    """Precision / recall / F1 of the candidates scoring ``>= threshold`` (all when None)."""
    items = _dedup_candidates(cands)
    kept = [(s, t) for sc, s, t in items if threshold is None or sc >= threshold]
    return _prf(sum((p in gold) for p in kept), len(kept), len(gold), threshold)


def best_threshold(cands: Iterable[tuple[float, str, str]], gold: set[tuple[str, str]]) -> PRF:
    """The threshold with the best F1 (LASER's BuccOptimize): midway between the last kept candidate's
    score and the next one's (or just the last score when every candidate is kept)."""
    items = _dedup_candidates(cands)
    best = PRF(None, 0.0, 0.0, 0.0, 0, 0)
    correct = 0
    for n, (score, s, t) in enumerate(items, 1):
        correct += (s, t) in gold
        cur = _prf(correct, n, len(gold), None)
        if cur.f1 > best.f1:
            nxt = items[n][0] if n < len(items) else None
            cur.threshold = (score + nxt) / 2 if nxt is not None and nxt < score else score
            best = cur
    return best


def kfold_prf(
    cands: Iterable[tuple[float, str, str]], gold: set[tuple[str, str]], folds: int = 5, seed: int = 0
) -> tuple[PRF, list[float | None]]:
    """P/R/F1 with a threshold never tuned on the pairs it is scored on: the source sentences (those of the
    candidates and of the gold) are dealt into ``folds`` parts; each part is scored at the best threshold
    of the other parts (``best_threshold`` on their candidates and gold), and the counts are summed.
    Returns the pooled PRF (its threshold: the median of the folds') and each fold's threshold."""
    items = _dedup_candidates(cands)
    sources = sorted({s for _, s, _ in items} | {s for s, _ in gold})
    if folds < 2 or len(sources) < folds:
        raise UserError(
            f"k-fold tuning needs at least 2 folds and as many source sentences ({len(sources)} "
            f"sentences, {folds} folds)"
        )
    random.Random(seed).shuffle(sources)
    fold_of = {s: i % folds for i, s in enumerate(sources)}
    correct = extracted = 0
    thresholds: list[float | None] = []
    for f in range(folds):
        tune = [c for c in items if fold_of[c[1]] != f]
        tuned = best_threshold(tune, {g for g in gold if fold_of[g[0]] != f})
        thresholds.append(tuned.threshold)
        held = [c for c in items if fold_of[c[1]] == f]
        scored = prf_at(held, {g for g in gold if fold_of[g[0]] == f}, tuned.threshold)
        correct += scored.correct
        extracted += scored.extracted
    known = sorted(t for t in thresholds if t is not None)
    median = float(np.median(known)) if known else None
    return _prf(correct, extracted, len(gold), median), thresholds


def xsim_error(src: np.ndarray, tgt: np.ndarray, margin: str = "ratio", k: int = 4) -> float:
    """LASER's xsim: row i of ``src`` should retrieve row i of ``tgt`` (float32, L2-normalised rows).

    Error rate = share of rows whose best target (by ``margin`` over its k nearest targets, or plain
    cosine for ``absolute``/``cosine``) is not the aligned one. Exact search (small gold sets).
    """
    from mining.margin import canonical_margin, margin_scores

    if src.shape != tgt.shape:
        raise UserError(f"xsim needs aligned sets of equal shape, got {src.shape} and {tgt.shape}")
    n = src.shape[0]
    if n == 0:
        return float("nan")
    sims = src @ tgt.T
    margin = canonical_margin(margin)
    if margin == "absolute":
        best = sims.argmax(axis=1)
    else:
        k = min(k, n)
        fwd_ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        fwd_sims = np.take_along_axis(sims, fwd_ids, axis=1)
        bwd_sims = -np.sort(-sims.T, axis=1)[:, :k]
        sc = margin_scores(fwd_sims, fwd_ids, fwd_sims.mean(axis=1), bwd_sims.mean(axis=1), margin)
        best = fwd_ids[np.arange(n), sc.argmax(axis=1)]
    return float((best != np.arange(n)).mean())
