"""Split cleaned bitext into N-way dev/devtest, a hidden-parallel mono set, and decontaminated train.

Pure functions over ``pairs[lang][english] = Counter(translation -> occurrences)``: no I/O, so the
corpus builder stays thin and every rule here is tested on small dicts.

* :func:`select_eval` picks the N-way dev/devtest (FLORES-200 layout: line i of every language is a
  translation of English line i). An English string qualifies only if *every* eval language translates
  it, so the languages are chosen greedily: drop the language that blocks the most nearly-covered
  strings until enough strings are covered, then re-admit dropped languages that still fit.
  A language left out is reported, never padded. Blocking scores are divided by sqrt(pairs), so a big
  language costs more to drop. Among the covered strings, those whose removal from train costs the
  languages outside the eval set least come first (decontamination removes an eval string from
  *every* language's train); ties are broken by a seeded shuffle.
* :func:`hold_out_mono` takes, per language, pairs that appear nowhere else and hides them among
  unpaired sentences of the same kind: the mining stage must find them again (like BUCC).
* :func:`train_pairs` is what remains, minus every pair whose English or translation (normalised with
  :func:`mt.data.clean.norm_key`) is in a blocked set (dev/devtest sentences of every language, the
  hidden mono pairs of that language, ``--exclude`` files).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from mt.common.langs import ENGLISH
from mt.data.clean import norm_key


def canonical(trans: Counter) -> str:
    """The translation used in eval sets: the most frequent one, ties broken by string order."""
    return min(trans.items(), key=lambda kv: (-kv[1], kv[0]))[0]


@dataclass
class EvalSplit:
    langs: list[str]  # languages with dev/devtest files (sorted)
    not_covered: list[str]  # languages left out of dev/devtest (sorted)
    dev: list[str]  # English lines
    devtest: list[str]
    targets: dict[str, dict[str, str]] = field(default_factory=dict)  # lang -> English -> translation

    def lines(self, split: str, lang: str) -> list[str]:
        english = self.dev if split == "dev" else self.devtest
        return list(english) if lang == ENGLISH else [self.targets[lang][e] for e in english]

    def norm_keys(self) -> set[str]:
        """Every dev/devtest sentence of every language, normalised: what train must never contain."""
        keys = {norm_key(e) for e in self.dev + self.devtest}
        for by_en in self.targets.values():
            keys.update(norm_key(t) for t in by_en.values())
        return keys


def choose_eval_langs(
    cover: np.ndarray, need: int, min_langs: int = 1, weight: np.ndarray | None = None
) -> tuple[list[int], list[int]]:
    """Columns (languages) of the boolean ``cover[english, lang]`` matrix to keep, and those dropped.

    Greedy: while fewer than ``need`` rows are covered by all kept columns, drop the column with the
    highest blocking score ``sum over rows it misses of 2**-(columns the row misses)``: a language
    that is the last gap of many strings goes first. Then dropped columns are re-admitted (latest
    dropped first) while ``need`` rows stay covered. Deterministic: ties go to the lower index.
    """
    n_rows, n_cols = cover.shape
    miss = (~cover).astype(np.float32)  # matrix-vector products instead of per-step boolean reductions
    keep = np.ones(n_cols, dtype=bool)
    dropped: list[int] = []

    def covered(cols: np.ndarray) -> int:
        return int((miss @ cols.astype(np.float32) == 0).sum())

    while keep.sum() > min_langs:
        missing = miss @ keep.astype(np.float32)
        if int((missing == 0).sum()) >= need:
            break
        score = np.exp2(-missing) @ miss
        if weight is not None:
            score = score / weight
        score[~keep] = -1.0
        col = int(np.argmax(score))  # first max: lowest index
        keep[col] = False
        dropped.append(col)
    for col in reversed(list(dropped)):
        trial = keep.copy()
        trial[col] = True
        if covered(trial) >= need:
            keep = trial
            dropped.remove(col)
    return [int(i) for i in np.flatnonzero(keep)], sorted(dropped)


def select_eval(
    pairs: dict[str, dict[str, Counter]],
    langs: list[str],
    dev_size: int,
    devtest_size: int,
    seed: int,
    blocked: set[str] = frozenset(),
    min_langs: int = 1,
    eligible: set[str] | None = None,
) -> EvalSplit:
    """Choose the eval languages and the N-way dev/devtest English strings (see the module docstring).

    ``blocked`` holds normalised sentences that must not be used (``--exclude``); ``eligible``, when
    given, the English strings that may be used. Sizes shrink in proportion when the data cannot fill
    them even with ``min_langs`` languages.
    """
    langs = sorted(langs)
    need = dev_size + devtest_size
    if not langs or need == 0:
        return EvalSplit([], list(langs), [], [])
    # one English string per normalised form: the one translated into most languages
    coverage = Counter(en for lang in langs for en in pairs[lang])
    best: dict[str, str] = {}
    for en in sorted(coverage):
        key = norm_key(en)
        if key in blocked or (eligible is not None and en not in eligible):
            continue
        if key not in best or coverage[en] > coverage[best[key]]:
            best[key] = en
    candidates = sorted(best.values())

    def usable(lang: str, en: str) -> bool:  # a blocked translation disqualifies the string for that language
        trans = pairs[lang].get(en)
        return trans is not None and (not blocked or norm_key(canonical(trans)) not in blocked)

    cover = np.zeros((len(candidates), len(langs)), dtype=bool)
    for j, lang in enumerate(langs):
        cover[:, j] = np.fromiter((usable(lang, en) for en in candidates), dtype=bool, count=len(candidates))
    # a big language is worth more to an eval set: its blocking score is divided by sqrt(pairs), which
    # keeps e.g. German in the --langs all set at the cost of one small language
    weight = np.array([np.sqrt(2.0 + sum(len(t) for t in pairs[lang].values())) for lang in langs])
    target = need
    for _ in range(20):  # translations that collide (two strings, one translation) cost rows: ask for more
        keep, dropped = choose_eval_langs(cover, target, min_langs, weight)
        kept = [langs[i] for i in keep]
        harm = _harm(pairs, [lang for lang in langs if lang not in kept])
        chosen = _pick_rows(candidates, cover[:, keep].all(axis=1), kept, pairs, need, seed, harm)
        if len(chosen) >= need or len(keep) <= min_langs:
            break
        target += need - len(chosen)
    if not chosen:
        return EvalSplit([], langs, [], [])
    n_dev = dev_size if len(chosen) == need else round(len(chosen) * dev_size / need)
    return EvalSplit(
        langs=kept,
        not_covered=[langs[i] for i in dropped],
        dev=chosen[:n_dev],
        devtest=chosen[n_dev:],
        targets={lang: {en: canonical(pairs[lang][en]) for en in chosen} for lang in kept},
    )


def _harm(pairs: dict[str, dict[str, Counter]], others: list[str]) -> Counter:
    """What taking an English string into dev/devtest costs the languages outside the eval set.

    Decontamination removes it from every language's train, so a string that a 200-pair language
    translates costs that language 1/200 of its data: sum of 1/size over the languages translating it.
    """
    harm: Counter = Counter()
    for lang in others:
        share = 1.0 / max(len(pairs[lang]), 1)
        for en in pairs[lang]:
            harm[en] += share
    return harm


def _pick_rows(
    candidates: list[str],
    ok: np.ndarray,
    kept: list[str],
    pairs: dict[str, dict[str, Counter]],
    need: int,
    seed: int,
    harm: Counter,
) -> list[str]:
    """Take ``need`` covered strings, least harmful first (random among equals, seeded), skipping any
    whose line in some language repeats an already chosen line (normalised)."""
    rows = [en for en, good in zip(candidates, ok) if good] if kept else []
    random.Random(f"eval-{seed}").shuffle(rows)
    rows.sort(key=lambda en: round(harm[en], 9))  # stable: the shuffle breaks ties
    chosen: list[str] = []
    used: dict[str, set[str]] = {lang: set() for lang in [ENGLISH, *kept]}
    for en in rows:
        keys = {ENGLISH: norm_key(en), **{lang: norm_key(canonical(pairs[lang][en])) for lang in kept}}
        if any(keys[lang] in used[lang] for lang in keys):
            continue
        for lang, key in keys.items():
            used[lang].add(key)
        chosen.append(en)
        if len(chosen) == need:
            break
    return chosen


@dataclass
class MonoSplit:
    english: list[str]  # the English file, shuffled: hidden pairs + English distractors
    foreign: list[str]  # the other language's file, shuffled: hidden pairs + foreign distractors
    gold: list[tuple[int, int]]  # (line in english, line in foreign) of every hidden pair, sorted
    hidden: list[tuple[str, str]]  # the hidden pairs (English, translation)


class Pair(NamedTuple):
    """One distinct pair with the normalised keys every comparison uses (computed once)."""

    en: str
    en_key: str
    tgt: str
    tgt_key: str


def pair_rows(trans_by_en: dict[str, Counter], en_keys: dict[str, str] | None = None) -> list[Pair]:
    """Every distinct (English, translation) pair of one language, sorted, with normalised keys.

    ``en_keys`` caches English keys across languages (the same English recurs in ~100 languages).
    """
    en_keys = {} if en_keys is None else en_keys
    rows = []
    for en in sorted(trans_by_en):
        ek = en_keys.get(en)
        if ek is None:
            ek = en_keys[en] = norm_key(en)
        rows.extend(Pair(en, ek, t, norm_key(t)) for t in sorted(trans_by_en[en]))
    return rows


def _sample(rng: random.Random, items: list, n: int, ok) -> list:
    """Up to ``n`` distinct items with ``ok(item)``, uniformly, without filtering the whole list first
    when most items qualify (rejection sampling; falls back to filtering)."""
    picked: dict[int, None] = {}
    for _ in range(20 * n):
        if len(picked) == n or not items:
            break
        i = rng.randrange(len(items))
        if i not in picked and ok(items[i]):
            picked[i] = None
    if len(picked) < n:
        pool = [i for i in range(len(items)) if i not in picked and ok(items[i])]
        picked.update(dict.fromkeys(rng.sample(pool, min(n - len(picked), len(pool)))))
    return [items[i] for i in picked]


def hold_out_mono(
    rows: list[Pair], english_pool: list[tuple[str, str]], size: int, max_fraction: float, blocked: set[str], seed: str
) -> MonoSplit:
    """Hide up to ``size`` pairs (at most ``max_fraction`` of the pairs not blocked) among distractors.

    A hidden pair is a 1:1 pair: its English has one translation, its translation (normalised) no
    other English, and neither side is ``blocked``. Distractors: as many English strings of
    ``english_pool`` (sorted (English, key) tuples) that this language does not translate, and as many
    translations of other English strings; the two files are shuffled independently. ``rows`` are
    the language's :func:`pair_rows`.
    """
    rng = random.Random(f"mono-{seed}")
    usable = [r for r in rows if r.en_key not in blocked and r.tgt_key not in blocked]
    tgt_count = Counter(r.tgt_key for r in rows)
    en_count = Counter(r.en for r in rows)
    eligible = [(r.en, r.tgt) for r in usable if en_count[r.en] == 1 and tgt_count[r.tgt_key] == 1]
    n = min(size, int(len(usable) * max_fraction), len(eligible))
    hidden = rng.sample(eligible, n) if n > 0 else []
    if not hidden:
        return MonoSplit([], [], [], [])
    en_keys = {r.en_key for r in rows}
    hidden_en = {norm_key(e) for e, _ in hidden}
    hidden_tgt = {norm_key(t) for _, t in hidden}
    en_extra = [e for e, _ in _sample(rng, english_pool, n, lambda ek: ek[1] not in en_keys and ek[1] not in blocked)]
    foreign_pool = sorted({r.tgt for r in usable if r.en_key not in hidden_en and r.tgt_key not in hidden_tgt})
    fo_extra = _sample(rng, foreign_pool, n, lambda t: True)
    english = [e for e, _ in hidden] + en_extra
    foreign = [t for _, t in hidden] + fo_extra
    e_order = list(range(len(english)))
    f_order = list(range(len(foreign)))
    rng.shuffle(e_order)
    rng.shuffle(f_order)
    e_pos = {old: new for new, old in enumerate(e_order)}
    f_pos = {old: new for new, old in enumerate(f_order)}
    gold = sorted((e_pos[i], f_pos[i]) for i in range(n))
    return MonoSplit(
        english=[english[i] for i in e_order],
        foreign=[foreign[i] for i in f_order],
        gold=gold,
        hidden=hidden,
    )


def train_pairs(rows: list[Pair], blocked: dict[str, set[str]]) -> tuple[list[tuple[str, str]], Counter]:
    """Every pair of ``rows`` (:func:`pair_rows`) with neither side's key in a blocked set.

    ``blocked`` maps a reason (``decontaminated``, ``excluded``, ``mono``) to normalised sentences;
    returns the pairs, in order, and how many were removed for each reason (the first that matches).
    """
    out: list[tuple[str, str]] = []
    removed: Counter = Counter()
    for r in rows:
        reason = next((why for why, keys in blocked.items() if r.en_key in keys or r.tgt_key in keys), None)
        if reason is None:
            out.append((r.en, r.tgt))
        else:
            removed[reason] += 1
    return out, removed
