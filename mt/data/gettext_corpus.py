"""``mt-data build gettext``: the embedded default corpus from the gettext catalogues on every machine.

Reads ``{locale_dir}/*/LC_MESSAGES/*.mo`` (English msgids and their human translations), cleans the
pairs (:mod:`mt.data.clean`), maps locale folders to FLORES-200 codes (:mod:`mt.data.locales`) and writes
the corpus directory of :mod:`mt.data.layout`::

    {out}/train/eng_Latn-{lang}.eng_Latn|.{lang}   bitext, decontaminated against dev/devtest/mono/--exclude
    {out}/dev/{lang}.dev, {out}/devtest/{lang}.devtest   N-way, line-aligned (FLORES-200 layout)
    {out}/mono/eng_Latn-{lang}.eng_Latn|.{lang}   hidden-parallel monolingual files for mining
    {out}/mono/eng_Latn-{lang}.gold.tsv           0-based line_in_eng<TAB>line_in_lang of the hidden pairs
    {out}/stats.tsv                                lang train_pairs dev devtest mono tier
    {out}/build.json                               config + inputs fingerprint, outputs, drop counts

The split logic (N-way selection, hold-out, decontamination) lives in :mod:`mt.data.splits`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import ENGLISH, check_code
from mt.data import layout, splits
from mt.data.clean import CleanConfig, clean_source, clean_target, norm_key, script_mismatch
from mt.data.locales import classify_locale, variant_rank
from mt.data.mo import MoFormatError, read_mo

# iso-codes catalogues (iso_3166 countries, iso_639 languages, iso_4217 currencies, iso_15924 scripts):
# names, not sentences. They stay in train but never enter dev/devtest (see splits.select_eval).
NAME_CATALOGUES = ("iso_", "iso-")
BUILD_FORMAT = 1  # bump when the output format or the selection logic changes: invalidates old builds

# The demo language set (``--langs demo``): 4 high, 3 mid, 4 low-resource languages in 6 scripts, chosen
# on /usr/share/locale so that all 11 share >= 500 N-way dev/devtest strings. amh_Ethi and swh_Latn were
# considered: their catalogues hold ~30 pairs of >= 3 words (mostly country names), too few to evaluate.
DEMO_LANGS: tuple[str, ...] = (
    "deu_Latn",
    "fra_Latn",
    "rus_Cyrl",
    "zho_Hans",  # high
    "eus_Latn",
    "hin_Deva",
    "arb_Arab",  # mid
    "mya_Mymr",
    "khk_Cyrl",
    "xho_Latn",
    "nso_Latn",  # low
)

# Resource tier by training pairs (after cleaning and decontamination), written to stats.tsv. On
# /usr/share/locale, --langs all (107 languages with >= 100 pairs) splits 26 high / 45 mid / 36 low:
# high are the big desktop languages (fra 38k ... ell, kat 10k), low those with mostly iso-codes names
# and a few GTK catalogues (xho, khk, nso, ... < 1k pairs).
TIER_HIGH = 10_000
TIER_MID = 1_000


def tier_of(train_pairs: int) -> str:
    """``high`` (>= 10,000 training pairs), ``mid`` (>= 1,000) or ``low``."""
    if train_pairs >= TIER_HIGH:
        return "high"
    return "mid" if train_pairs >= TIER_MID else "low"


@dataclass
class GettextConfig:
    """``mt-data build gettext``; each field with ``arg`` is also its flag."""

    out: str = arg(help="corpus directory to write", required=True)
    locale_dir: str = arg("/usr/share/locale", "tree of LOCALE/LC_MESSAGES/*.mo")
    # "all" | "demo" | "deu_Latn,fra_Latn,..." | ["deu_Latn", ...]
    langs: str | list[str] = arg("all", "all | demo (%s) | comma-separated FLORES-200 codes" % ",".join(DEMO_LANGS))
    min_words: int = arg(3, "drop pairs whose English has fewer words")
    max_words: int = arg(100, "drop pairs whose English has more words")
    dev_size: int = arg(200, "N-way dev lines")
    devtest_size: int = arg(300, "N-way devtest lines")
    mono_size: int = arg(300, "hidden parallel pairs per language in mono/")
    # hold out at most this share of the pairs dev/devtest leave
    mono_max_fraction: float = arg(0.2, "hide at most this share of a language's pairs")
    seed: int = arg(1, "random seed")
    exclude: list[str] = arg(
        [],
        "drop every train/mono pair with a side that is a line of FILE (casefolded)",
        nargs="+",
        metavar="FILE",
        type=str,
    )
    min_pairs: int = arg(100, "skip languages with fewer clean pairs")
    # processes reading catalogues; 0: min(4, CPUs). Output does not depend on it.
    workers: int = arg(0, "processes reading catalogues; 0 = min(4, CPUs) (default: %(default)s)")
    progress: bool = True  # the command line's --no-progress-bar


@dataclass
class LangStats:
    lang: str
    train_pairs: int
    dev: int
    devtest: int
    mono: int
    tier: str


@dataclass
class BuildResult:
    out: Path
    langs: list[str]
    eval_langs: list[str]
    dev_size: int
    devtest_size: int
    stats: list[LangStats]
    drops: dict[str, int]
    skipped_langs: dict[str, str]  # lang -> why it is not in the corpus
    not_in_eval: list[str]  # built languages that dev/devtest cannot cover
    bad_files: list[str]  # corrupt .mo files (reported, skipped)
    unknown_locales: dict[str, str]  # locale folder -> why it is not mapped
    up_to_date: bool = False
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class Catalogues:
    """Everything read from the locale tree, cleaned. ``pairs[code][en]`` counts each translation."""

    pairs: dict[str, dict[str, Counter]]
    names: set[str]  # English strings of the iso-codes catalogues: names of countries, languages ...
    english: set[str]  # every English string that passed the English-side rules
    drops: Counter
    bad_files: list[str]
    unknown_locales: dict[str, str]
    rerouted: Counter  # (from_code, to_code) -> pairs moved by the script check
    n_files: int = 0
    n_pairs: int = 0


def discover(locale_dir: str | os.PathLike) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Locale folder -> its ``.mo`` files (symlinked duplicates removed); unknown/English folders aside."""
    root = Path(locale_dir)
    if not root.is_dir():
        raise UserError(
            f"{root}: no such locale directory; pass --locale-dir DIR "
            f"(a tree of LOCALE/LC_MESSAGES/*.mo files, e.g. /usr/share/locale)"
        )
    by_locale: dict[str, list[Path]] = defaultdict(list)
    seen: set[str] = set()
    for path in sorted(root.glob("*/LC_MESSAGES/*.mo")):
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        by_locale[path.parent.parent.name].append(path)
    if not by_locale:
        raise UserError(f"{root}: no */LC_MESSAGES/*.mo files; pass --locale-dir DIR")
    skipped: dict[str, str] = {}
    for loc in list(by_locale):
        info = classify_locale(loc)
        if info.code is None:
            skipped[loc] = info.note
            del by_locale[loc]
    return dict(by_locale), skipped


@dataclass
class _LocaleResult:
    locale: str
    pairs: dict[str, dict[str, Counter]]  # code (the locale's, or a script sibling) -> en -> translations
    names: set[str]
    english: set[str]
    drops: Counter
    rerouted: Counter
    bad_files: list[str]
    n_pairs: int


# English msgid -> clean_source() result, per (min_words, max_words); lives as long as the (worker) process,
# because one English string recurs in ~100 catalogues.
_SRC_CACHE: dict[tuple[int, int], dict[str, tuple[str, str | None]]] = {}


def _read_locale(locale: str, code: str, paths: list[Path], wanted: frozenset[str], cfg: CleanConfig) -> _LocaleResult:
    """Parse and clean the catalogues of one locale folder (runs in a worker process)."""
    lang3, script = code.split("_")
    src_cache = _SRC_CACHE.setdefault((cfg.min_words, cfg.max_words), {})
    english: set[str] = set()
    pairs: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    names: set[str] = set()
    drops: Counter = Counter()
    rerouted: Counter = Counter()
    bad: list[str] = []
    raw_seen: set[tuple[str, str]] = set()  # the same msgid/msgstr in two packages counts once
    n_pairs = 0
    for path in paths:
        try:
            cat = read_mo(path)
        except MoFormatError as exc:
            bad.append(str(exc))
            continue
        is_names = path.stem.startswith(NAME_CATALOGUES)
        for raw in cat.pairs():
            n_pairs += 1
            if raw in raw_seen:
                drops["duplicate"] += 1
                continue
            raw_seen.add(raw)
            hit = src_cache.get(raw[0])
            if hit is None:
                hit = src_cache[raw[0]] = clean_source(raw[0], cfg)
            en, reason = hit
            if reason is not None:
                drops[reason] += 1
                continue
            english.add(en)
            if is_names:
                names.add(en)
            tgt, reason = clean_target(en, raw[1], script)
            target_code = code
            if reason == "script":
                other = f"{lang3}_{script_mismatch(tgt, en, script)}"
                if other in wanted and other != code:
                    rerouted[(code, other)] += 1
                    target_code, reason = other, None
            if reason is not None:
                drops[reason] += 1
                continue
            pairs[target_code][en][tgt] += 1
    return _LocaleResult(locale, {c: dict(d) for c, d in pairs.items()}, names, english, drops, rerouted, bad, n_pairs)


def read_catalogues(
    locale_dir: str | os.PathLike, codes: set[str] | None, cfg: CleanConfig, progress: bool = True, jobs: int = 1
) -> Catalogues:
    """Parse and clean every catalogue of the selected codes (None: all), in ``jobs`` processes.

    A translation whose letters are in another script than its code's is moved to the sibling code of
    that script when one is being built (``tt`` holds Latin Tatar: -> ``tat_Latn``), else dropped.
    The result does not depend on ``jobs``: locale results are merged in a fixed order.
    """
    by_locale, unknown = discover(locale_dir)
    code_of = {loc: classify_locale(loc).code for loc in by_locale}
    present = set(code_of.values())
    wanted = frozenset(present if codes is None else present & codes)
    locales = sorted(
        (loc for loc in by_locale if code_of[loc] in wanted), key=lambda loc: (code_of[loc], variant_rank(loc))
    )
    n_files = sum(len(by_locale[loc]) for loc in locales)
    tasks = [(loc, code_of[loc], by_locale[loc], wanted, cfg) for loc in locales]
    bar = tqdm(total=n_files, desc="reading .mo", unit="file", disable=not progress, file=sys.stderr)
    results: dict[str, _LocaleResult] = {}
    if jobs > 1 and len(tasks) > 1:
        # biggest folders first so the pool's tail is short; results are keyed, so order does not matter
        tasks.sort(key=lambda t: -sum(p.stat().st_size for p in t[2]))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_read_locale, *t): t for t in tasks}
            for fut in as_completed(futures):
                res = fut.result()
                results[res.locale] = res
                bar.update(len(futures[fut][2]))
    else:
        for t in tasks:
            results[t[0]] = _read_locale(*t)
            bar.update(len(t[2]))
    bar.close()

    # Merge locale variants into their code: an English string takes its translations from the
    # best-ranked folder that has it (pt_BR before pt before pt_PT); script siblings come last.
    drops: Counter = Counter()
    rerouted: Counter = Counter()
    names: set[str] = set()
    english: set[str] = set()
    bad: list[str] = []
    contributions = []
    for loc in locales:
        res = results[loc]
        drops.update(res.drops)
        rerouted.update(res.rerouted)
        bad.extend(res.bad_files)
        english |= res.english
        names |= res.names
        for code, trans_by_en in res.pairs.items():
            rank = variant_rank(loc) if code == code_of[loc] else (2, 0, loc)
            contributions.append((code, rank, trans_by_en))
    pairs: dict[str, dict[str, Counter]] = {}
    for code, _, trans_by_en in sorted(contributions, key=lambda c: (c[0], c[1])):
        merged = pairs.setdefault(code, {})
        for en, trans in trans_by_en.items():
            if en in merged:
                drops["variant"] += sum(trans.values())
            else:
                merged[en] = trans
    for trans_by_en in pairs.values():
        for trans in trans_by_en.values():
            drops["duplicate"] += sum(trans.values()) - len(trans)
    return Catalogues(
        pairs=pairs,
        names=names,
        english=english,
        drops=drops,
        bad_files=bad,
        unknown_locales=unknown,
        rerouted=rerouted,
        n_files=n_files,
        n_pairs=sum(r.n_pairs for r in results.values()),
    )


# ------------------------------------------------------------------------------------------------ building


def resolve_langs(spec: str | list[str], present: set[str]) -> tuple[set[str] | None, list[str]]:
    """``all`` -> None (every language found); ``demo`` -> DEMO_LANGS; else a comma list of codes.

    Returns the codes to read and warnings (demo languages this locale tree lacks).
    """
    spec = spec.strip() if isinstance(spec, str) else ",".join(spec)
    if spec == "all":
        return None, []
    if spec == "demo":
        missing = [c for c in DEMO_LANGS if c not in present]
        warn = [f"demo language {c} has no catalogue here; building without it" for c in missing]
        return set(DEMO_LANGS) - set(missing), warn
    codes = [c.strip() for c in spec.split(",") if c.strip()]
    if not codes:
        raise UserError("--langs is empty: use all, demo or FLORES-200 codes such as deu_Latn,fra_Latn")
    for c in codes:
        check_code(c, "--langs")
        if c == ENGLISH:
            raise UserError(f"--langs {c}: English is the source side of every pair; list target languages")
        if c not in present:
            raise UserError(
                f"--langs {c}: no catalogue in this locale tree maps to {c}; "
                f"`mt-data locales` lists the {len(present)} codes found"
            )
    return set(codes), []


def _read_excludes(paths: list[str]) -> set[str]:
    keys: set[str] = set()
    for p in paths:
        try:
            with open(p, encoding="utf-8", errors="replace") as fh:
                keys.update(k for k in (norm_key(line) for line in fh) if k)
        except OSError as exc:
            raise UserError(
                f"--exclude {p}: cannot read ({exc.strerror}); pass text files, one sentence a line"
            ) from None
    return keys


def _fingerprint(cfg: GettextConfig) -> str:
    """Config + every input file's (path, size, mtime) + --exclude contents + BUILD_FORMAT."""
    root = Path(cfg.locale_dir)
    files = [
        (str(p.relative_to(root)), st.st_size, st.st_mtime_ns)
        for p in sorted(root.glob("*/LC_MESSAGES/*.mo"))
        for st in [p.stat()]
    ]
    excludes = []
    for p in cfg.exclude:
        data = Path(p).read_bytes() if Path(p).is_file() else b""
        excludes.append((str(Path(p).resolve()), hashlib.sha256(data).hexdigest()))
    conf = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "workers", "exclude")}
    blob = json.dumps({"format": BUILD_FORMAT, "config": conf, "files": files, "exclude": excludes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_write(path) as fh:
        for line in lines:
            fh.write(line + "\n")


def _stats_tsv(stats: list[LangStats]) -> str:
    rows = ["lang\ttrain_pairs\tdev\tdevtest\tmono\ttier"]
    rows += [f"{s.lang}\t{s.train_pairs}\t{s.dev}\t{s.devtest}\t{s.mono}\t{s.tier}" for s in stats]
    return "\n".join(rows) + "\n"


def format_table(stats: list[LangStats]) -> str:
    """The stats table as printed at the end of a build (sorted by size, like stats.tsv)."""
    head = f"{'lang':<10} {'train_pairs':>11} {'dev':>5} {'devtest':>7} {'mono':>5}  tier"
    lines = [head] + [
        f"{s.lang:<10} {s.train_pairs:>11} {s.dev:>5} {s.devtest:>7} {s.mono:>5}  {s.tier}" for s in stats
    ]
    total = sum(s.train_pairs for s in stats)
    tiers = Counter(s.tier for s in stats)
    lines.append(
        f"{len(stats)} languages, {total} training pairs; tiers: "
        + ", ".join(f"{t} {tiers[t]}" for t in ("high", "mid", "low"))
    )
    return "\n".join(lines)


def _load_result(out: Path, meta: dict) -> BuildResult:
    r = meta["result"]
    return BuildResult(
        out=out,
        langs=r["langs"],
        eval_langs=r["eval_langs"],
        dev_size=r["dev_size"],
        devtest_size=r["devtest_size"],
        stats=[LangStats(**s) for s in r["stats"]],
        drops=r["drops"],
        skipped_langs=r["skipped_langs"],
        not_in_eval=r["not_in_eval"],
        bad_files=r["bad_files"],
        unknown_locales=r["unknown_locales"],
        up_to_date=True,
    )


def _is_complete(out: Path, meta: dict) -> bool:
    return all(
        (out / rel).is_file() and (out / rel).stat().st_size == size for rel, size in meta.get("outputs", {}).items()
    )


def build_gettext_corpus(cfg: GettextConfig) -> BuildResult:
    """Build (or confirm up to date) the gettext corpus directory ``cfg.out``. See the module docstring."""
    t0 = time.monotonic()
    _check_config(cfg)
    out = Path(cfg.out)
    manifest = out / "build.json"
    fingerprint = _fingerprint(cfg)
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("fingerprint") == fingerprint and _is_complete(out, meta):
            result = _load_result(out, meta)
            result.seconds = time.monotonic() - t0
            print(f"{out}: up to date ({len(result.langs)} languages; delete {manifest} to force a rebuild)")
            return result
        old_outputs = set(meta.get("outputs", {}))
        manifest.unlink()  # the old build is no longer complete
    else:
        old_outputs = set()

    by_locale, _ = discover(cfg.locale_dir)
    present = {classify_locale(loc).code for loc in by_locale}
    codes, warnings = resolve_langs(cfg.langs, present)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    cats = read_catalogues(
        cfg.locale_dir,
        codes,
        CleanConfig(cfg.min_words, cfg.max_words),
        progress=cfg.progress,
        jobs=cfg.workers or min(4, os.cpu_count() or 1),
    )
    wanted = sorted(cats.pairs if codes is None else codes & set(cats.pairs))
    skipped: dict[str, str] = {}
    if codes is not None:
        skipped.update({c: "no pair survived cleaning" for c in sorted(codes - set(cats.pairs))})
    langs = []
    for lang in wanted:
        n = sum(len(t) for t in cats.pairs[lang].values())
        if n < cfg.min_pairs:
            skipped[lang] = f"{n} pairs < --min-pairs {cfg.min_pairs}"
        else:
            langs.append(lang)
    if not langs:
        raise UserError(
            f"{cfg.locale_dir}: no language has --min-pairs {cfg.min_pairs} clean pairs "
            f"(selected: {cfg.langs}); lower --min-pairs or --min-words"
        )

    excluded = _read_excludes(cfg.exclude)
    ev = splits.select_eval(
        cats.pairs,
        langs,
        cfg.dev_size,
        cfg.devtest_size,
        cfg.seed,
        blocked=excluded,
        eligible=cats.english - cats.names,
    )
    eval_keys = ev.norm_keys()
    drops = Counter(cats.drops)
    outputs: list[Path] = []
    stats: list[LangStats] = []
    eval_set = set(ev.langs)
    en_keys: dict[str, str] = {}
    english_pool = [(en, en_keys.setdefault(en, norm_key(en))) for en in sorted(cats.english)]
    for lang in tqdm(langs, desc="writing", unit="lang", disable=not cfg.progress, file=sys.stderr):
        rows = splits.pair_rows(cats.pairs[lang], en_keys)
        mono = splits.hold_out_mono(
            rows, english_pool, cfg.mono_size, cfg.mono_max_fraction, eval_keys | excluded, seed=f"{cfg.seed}-{lang}"
        )
        if len(mono.hidden) < MONO_MIN:
            mono = splits.MonoSplit([], [], [], [])
        hidden = {norm_key(s) for pair in mono.hidden for s in pair}
        train, removed = splits.train_pairs(rows, {"decontaminated": eval_keys, "excluded": excluded, "mono": hidden})
        drops["decontaminated"] += removed["decontaminated"]
        drops["excluded"] += removed["excluded"]
        random.Random(f"train-{cfg.seed}-{lang}").shuffle(train)
        prefix = layout.train_prefix(out, ENGLISH, lang)
        for side, path in ((0, Path(f"{prefix}.{ENGLISH}")), (1, Path(f"{prefix}.{lang}"))):
            _write_lines(path, [p[side] for p in train])
            outputs.append(path)
        if mono.hidden:
            mprefix = layout.mono_prefix(out, ENGLISH, lang)
            _write_lines(Path(f"{mprefix}.{ENGLISH}"), mono.english)
            _write_lines(Path(f"{mprefix}.{lang}"), mono.foreign)
            _write_lines(Path(f"{mprefix}.gold.tsv"), [f"{i}\t{j}" for i, j in mono.gold])
            outputs += [Path(f"{mprefix}.{ENGLISH}"), Path(f"{mprefix}.{lang}"), Path(f"{mprefix}.gold.tsv")]
        in_eval = lang in eval_set
        stats.append(
            LangStats(
                lang,
                len(train),
                len(ev.dev) if in_eval else 0,
                len(ev.devtest) if in_eval else 0,
                len(mono.hidden),
                tier_of(len(train)),
            )
        )
    for split in layout.EVAL_SPLITS:
        for lang in [ENGLISH, *ev.langs] if ev.langs else []:
            path = layout.eval_file(out, split, lang)
            _write_lines(path, ev.lines(split, lang))
            outputs.append(path)
    stats.sort(key=lambda s: (-s.train_pairs, s.lang))
    with atomic_write(out / "stats.tsv") as fh:
        fh.write(_stats_tsv(stats))
    outputs.append(out / "stats.tsv")

    rel_outputs = {str(p.relative_to(out)): p.stat().st_size for p in outputs}
    for rel in sorted(old_outputs - set(rel_outputs)):  # files of an earlier build with other languages
        (out / rel).unlink(missing_ok=True)
    result = BuildResult(
        out=out,
        langs=langs,
        eval_langs=list(ev.langs),
        dev_size=len(ev.dev),
        devtest_size=len(ev.devtest),
        stats=stats,
        drops=dict(sorted(drops.items())),
        skipped_langs=skipped,
        not_in_eval=[lang for lang in langs if lang not in eval_set],
        bad_files=cats.bad_files,
        unknown_locales=cats.unknown_locales,
        seconds=time.monotonic() - t0,
    )
    meta = {
        "format": BUILD_FORMAT,
        "fingerprint": fingerprint,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "workers")},
        "inputs": {"mo_files": cats.n_files, "pairs_read": cats.n_pairs},
        "rerouted": {f"{a}->{b}": n for (a, b), n in sorted(cats.rerouted.items())},
        "outputs": dict(sorted(rel_outputs.items())),
        "result": {k: v for k, v in asdict(result).items() if k not in ("out", "up_to_date", "seconds")},
    }
    with atomic_write(manifest) as fh:
        json.dump(meta, fh, indent=1, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
    _report(result, cats)
    return result


MONO_MIN = 10  # fewer hidden pairs than this make no mining test: no mono files for that language


def _check_config(cfg: GettextConfig) -> None:
    for name in ("min_words", "max_words", "dev_size", "devtest_size", "mono_size", "min_pairs"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 0")
    if cfg.max_words < cfg.min_words:
        raise UserError(f"--max-words {cfg.max_words} < --min-words {cfg.min_words}")
    if not 0.0 <= cfg.mono_max_fraction <= 1.0:
        raise UserError(f"--mono-max-fraction {cfg.mono_max_fraction}: must be between 0 and 1")
    for p in cfg.exclude:
        if not Path(p).is_file():
            raise UserError(f"--exclude {p}: no such file; pass text files, one sentence a line")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")


def _report(result: BuildResult, cats: Catalogues) -> None:
    """Warnings to stderr, the stats table and the drop counts to stdout."""
    err = sys.stderr
    english = sorted(loc for loc in result.unknown_locales if classify_locale(loc).status == "english")
    if english:
        print(f"skipped {len(english)} English locales (not translations): {' '.join(english)}", file=err)
    for loc, why in sorted(result.unknown_locales.items()):
        if loc not in english:
            print(f"skipped locale {loc}: {why}", file=err)
    for msg in result.bad_files:
        print(f"skipped corrupt file: {msg}", file=err)
    for lang, why in sorted(result.skipped_langs.items()):
        print(f"skipped language {lang}: {why}", file=err)
    for (a, b), n in sorted(cats.rerouted.items()):
        print(f"moved {n} pairs from {a} to {b} (written in {b.split('_')[1]} script)", file=err)
    if result.not_in_eval:
        print(
            f"not in dev/devtest ({len(result.not_in_eval)} languages cannot be covered N-way): "
            + " ".join(result.not_in_eval),
            file=err,
        )
    print(format_table(result.stats))
    print(f"dev/devtest: {result.dev_size}/{result.devtest_size} lines x {len(result.eval_langs)} languages + eng_Latn")
    total = cats.n_pairs
    print(
        f"pairs read: {total} from {cats.n_files} .mo files; kept {sum(s.train_pairs for s in result.stats)} "
        f"in train; drops by reason:"
    )
    for reason, n in sorted(result.drops.items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<16} {n:>9}  {100 * n / max(total, 1):5.1f}%")
    print(f"wrote {result.out} in {result.seconds:.1f}s")
