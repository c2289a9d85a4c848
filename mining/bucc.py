"""BUCC 2018-style bitext-mining sets: a builder from the gettext catalogues, a reader, and the scorer.

File layout (exactly BUCC 2018's, so the real BUCC sets plug in)::

    {dir}/{src}-{tgt}.{split}.{src}    id<TAB>sentence     e.g. de-en.training.de, lines "de-000000001<TAB>..."
    {dir}/{src}-{tgt}.{split}.{tgt}    id<TAB>sentence
    {dir}/{src}-{tgt}.{split}.gold     src_id<TAB>tgt_id   the hidden translation pairs

The builder makes such sets from real human translations: the (English msgid, translated msgstr)
pairs of ``/usr/share/locale/*/LC_MESSAGES/*.mo``, read by the small ``.mo`` reader below (until
``mt.data.gettext_corpus`` provides mono/gold files). A few translated pairs (the gold) are hidden among
many sentences of the same catalogues that have no translation on the other side: the foreign side gets
translations of English strings kept off the English side, the English side gets English strings with
no translation on the foreign side. Splits ``training`` (to tune the threshold, as BUCC) and ``test``
use disjoint strings. Codes in file names are FLORES-200 (``deu_Latn-eng_Latn.test.deu_Latn``).

Scorer: precision / recall / F1 of candidate pairs against the gold, at a given threshold and at the
best one (LASER's ``BuccOptimize``: midpoint between consecutive candidate scores), and the xsim error
rate (LASER ``xsim.py``: share of gold source sentences whose best target, by margin or cosine among
the gold targets, is not their translation).
"""

from __future__ import annotations

import json
import random
import re
import struct
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mt.errors import UserError, located
from mt.util import atomic_write

SPLITS = ("training", "test")
LOCALE_DIR = Path("/usr/share/locale")

# FLORES-200 code -> gettext locale folder (the languages the benchmark uses; extend as needed)
FLORES_TO_LOCALE = {
    "deu_Latn": "de", "fra_Latn": "fr", "rus_Cyrl": "ru", "zho_Hans": "zh_CN", "zho_Hant": "zh_TW",
    "spa_Latn": "es", "ita_Latn": "it", "por_Latn": "pt_BR", "swe_Latn": "sv", "ukr_Cyrl": "uk",
    "tur_Latn": "tr", "ind_Latn": "id", "jpn_Jpan": "ja", "kor_Hang": "ko", "pol_Latn": "pl",
    "nld_Latn": "nl", "ces_Latn": "cs", "fin_Latn": "fi", "ell_Grek": "el", "heb_Hebr": "he",
    "arb_Arab": "ar", "hin_Deva": "hi", "vie_Latn": "vi", "tha_Thai": "th", "eus_Latn": "eu",
    "gle_Latn": "ga", "cym_Latn": "cy", "afr_Latn": "af", "npi_Deva": "ne", "khm_Khmr": "km",
    "xho_Latn": "xh", "isl_Latn": "is", "zul_Latn": "zu", "amh_Ethi": "am", "swh_Latn": "sw",
}
# BUCC 2018's own codes -> FLORES-200, so encoders get the language they expect on the real sets
BUCC_TO_FLORES = {"de": "deu_Latn", "fr": "fra_Latn", "ru": "rus_Cyrl", "zh": "zho_Hans", "en": "eng_Latn"}
ENGLISH = "eng_Latn"

# --------------------------------------------------------------------------------------------------
# .mo reading and cleaning


def read_mo(path: str | Path) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of a compiled gettext catalogue; context dropped, singular form of plurals."""
    data = Path(path).read_bytes()
    if len(data) < 28:
        return
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if endian is None:
        return  # not a .mo file
    _rev, n, orig, trans = struct.unpack(endian + "4I", data[4:20])
    charset = "utf-8"
    for i in range(n):
        ln, off = struct.unpack(endian + "2I", data[orig + 8 * i : orig + 8 * i + 8])
        tl, toff = struct.unpack(endian + "2I", data[trans + 8 * i : trans + 8 * i + 8])
        msgid, msgstr = data[off : off + ln], data[toff : toff + tl]
        if not msgid:  # the header: find the charset
            m = re.search(rb"charset=([\w.-]+)", msgstr)
            if m:
                charset = m.group(1).decode("ascii", "replace")
            continue
        if not msgstr:
            continue
        msgid = msgid.split(b"\x04")[-1].split(b"\x00")[0]
        msgstr = msgstr.split(b"\x00")[0]
        try:
            yield msgid.decode(charset, "replace"), msgstr.decode(charset, "replace")
        except LookupError:
            yield msgid.decode("utf-8", "replace"), msgstr.decode("utf-8", "replace")


_PLACEHOLDER = re.compile(r"%(\d+\$)?[-+ #0']*(\d+|\*)?(\.(\d+|\*))?[hlLqjzt]*[A-Za-z%]|\{\w*\}|\$\{?\w+|\\[nt]")
_MARKUP = re.compile(r"<[^>]+>|&\w+;")
_ACCEL = re.compile(r"\(\s*[_&]\w\s*\)|[_&](?=\w)")


def clean(text: str) -> str | None:
    """Menu accelerators dropped, whitespace collapsed; None for strings that are not plain sentences
    (format placeholders or markup: removing them would leave broken fragments)."""
    if _PLACEHOLDER.search(text) or _MARKUP.search(text):
        return None
    return " ".join(_ACCEL.sub("", text).split()) or None


def _key(text: str) -> str:
    """Comparison key: case and punctuation do not make two strings different."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _usable_english(en: str, min_words: int, max_words: int) -> bool:
    n = len(en.split())
    return min_words <= n <= max_words and any(ch.isalpha() for ch in en)


def catalogue_pairs(locale: str, locale_dir: Path = LOCALE_DIR, min_words: int = 3,
                    max_words: int = 60) -> dict[str, list[str]]:
    """English sentence -> its cleaned translations (most frequent first) for one locale folder."""
    files = sorted((locale_dir / locale / "LC_MESSAGES").glob("*.mo"))
    if not files:
        raise UserError(f"{locale_dir / locale}/LC_MESSAGES: no .mo catalogues for locale {locale!r}")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in files:
        for en, tr in read_mo(f):
            en, tr = clean(en), clean(tr)
            if not en or not tr or _key(en) == _key(tr) or not _usable_english(en, min_words, max_words):
                continue
            counts[en][tr] += 1
    return {en: sorted(trs, key=lambda t: (-trs[t], t)) for en, trs in counts.items()}


def english_pool(locale_dir: Path = LOCALE_DIR, min_words: int = 3, max_words: int = 60) -> list[str]:
    """Every usable English msgid of every catalogue (the English side's non-parallel sentences)."""
    pool = set()
    for f in sorted(locale_dir.glob("*/LC_MESSAGES/*.mo")):
        for en, _ in read_mo(f):
            en = clean(en)
            if en and _usable_english(en, min_words, max_words):
                pool.add(en)
    return sorted(pool)


# --------------------------------------------------------------------------------------------------
# building


@dataclass
class BuildConfig:
    out: str = "work/bucc"
    langs: list[str] = field(default_factory=lambda: ["deu_Latn", "fra_Latn", "rus_Cyrl", "zho_Hans", "xho_Latn"])
    size: int = 5_000  # sentences per side per split (clipped for small languages)
    gold: int = 500  # hidden translation pairs per split (scaled down with size)
    seed: int = 1234
    locale_dir: str = str(LOCALE_DIR)
    splits: tuple[str, ...] = SPLITS


def bucc_files(dir: str | Path, src: str, tgt: str, split: str) -> dict[str, Path]:
    base = Path(dir) / f"{src}-{tgt}.{split}"
    return {"src": Path(f"{base}.{src}"), "tgt": Path(f"{base}.{tgt}"), "gold": Path(f"{base}.gold")}


def _write_tsv(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    with atomic_write(path) as fh:
        for a, b in rows:
            fh.write(f"{a}\t{b}\n")


def build_pair(lang: str, cfg: BuildConfig, pool: list[str]) -> dict:
    """Write the BUCC files of ``{lang}-eng_Latn`` for every split; returns counts per split."""
    locale = FLORES_TO_LOCALE.get(lang)
    if locale is None:
        raise UserError(f"no gettext locale known for {lang!r}; known: {', '.join(sorted(FLORES_TO_LOCALE))}")
    ldir = Path(cfg.locale_dir)
    pairs = catalogue_pairs(locale, ldir)
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
        raise UserError(f"{lang} ({locale}): only {len(english)} usable translated strings in {ldir}; "
                        "too few for a mining benchmark")
    # English-side noise may not be a translation of anything on the foreign side (of any split)
    on_foreign = english[: nsplit * size]
    excluded = {_key(en) for en in on_foreign}
    for en in on_foreign:
        excluded |= by_foreign[_key(chosen[en])]
    noise_pool = [en for en in pool if _key(en) not in excluded]
    rng.shuffle(noise_pool)
    if len(noise_pool) < nsplit * (size - gold):
        raise UserError(f"{lang}: only {len(noise_pool)} English sentences left for the English side; "
                        f"use a smaller --size than {size}")
    counts = {}
    for s, split in enumerate(cfg.splits):
        mine = english[s * size : (s + 1) * size]
        gold_en, foreign_only = mine[:gold], mine[gold:]
        en_noise = noise_pool[s * (size - gold) : (s + 1) * (size - gold)]
        src_side = [(chosen[en], en) for en in gold_en] + [(chosen[en], None) for en in foreign_only]
        tgt_side = [(en, en) for en in gold_en] + [(en, None) for en in en_noise]
        rng.shuffle(src_side)
        rng.shuffle(tgt_side)
        src_code, tgt_code = _bucc_id_prefix(lang), _bucc_id_prefix(ENGLISH)
        src_ids = {}
        tgt_ids = {}
        files = bucc_files(cfg.out, lang, ENGLISH, split)
        _write_tsv(files["src"], ((f"{src_code}-{i + 1:09d}", text) for i, (text, _) in enumerate(src_side)))
        _write_tsv(files["tgt"], ((f"{tgt_code}-{i + 1:09d}", text) for i, (text, _) in enumerate(tgt_side)))
        for i, (_, en) in enumerate(src_side):
            if en is not None:
                src_ids[en] = f"{src_code}-{i + 1:09d}"
        for i, (_, en) in enumerate(tgt_side):
            if en is not None:
                tgt_ids[en] = f"{tgt_code}-{i + 1:09d}"
        _write_tsv(files["gold"], sorted((src_ids[en], tgt_ids[en]) for en in gold_en))
        counts[split] = {"src": len(src_side), "tgt": len(tgt_side), "gold": len(gold_en)}
    return {"lang": lang, "locale": locale, "usable_pairs": len(english), "splits": counts}


def _bucc_id_prefix(code: str) -> str:
    return code.split("_")[0]


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Build every language of ``cfg.langs`` (against English) into ``cfg.out``; writes ``info.json``."""
    ldir = Path(cfg.locale_dir)
    if not ldir.is_dir():
        raise UserError(f"{ldir}: no gettext locale directory (install the packages' translations, or pass "
                        "--locale-dir)")
    if cfg.gold >= cfg.size:
        raise UserError(f"--gold {cfg.gold} must be smaller than --size {cfg.size}")
    pool = english_pool(ldir)
    info = {"format": "bucc2018", "source": str(ldir), "seed": cfg.seed, "size": cfg.size, "gold": cfg.gold,
            "pairs": {}}
    for lang in cfg.langs:
        r = build_pair(lang, cfg, pool)
        info["pairs"][f"{lang}-{ENGLISH}"] = r
        if progress:
            print(f"bucc-build: {lang}-{ENGLISH}: {r['usable_pairs']} usable translated strings; "
                  + ", ".join(f"{s}: {c['src']}/{c['tgt']} sentences, {c['gold']} gold" for s, c in r["splits"].items()),
                  file=sys.stderr)
    with atomic_write(Path(cfg.out) / "info.json") as fh:
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
        raise UserError(f"{path}: BUCC file not found (build a set with `mine-eval bucc-build`, or point --data "
                        "at a folder holding the BUCC 2018 files)")
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


def read_gold(path: str | Path, src_ids: set[str] | None = None, tgt_ids: set[str] | None = None) -> set[tuple[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: gold file not found")
    gold = set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise located(path, n, "expected src_id<TAB>tgt_id")
            if src_ids is not None and parts[0] not in src_ids:
                raise located(path, n, f"source id {parts[0]!r} is not in the source file")
            if tgt_ids is not None and parts[1] not in tgt_ids:
                raise located(path, n, f"target id {parts[1]!r} is not in the target file")
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
