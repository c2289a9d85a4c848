"""The gettext "software kind" task: label each gettext message by the kind of software whose catalogue
(``.mo`` file stem, the gettext *domain*) it comes from; train on English, test on other languages.

Labels (:data:`LABEL_DOMAINS`), chosen on /usr/share/locale (measured 2026-11-23; clean English messages
of >= 3 words, :mod:`mt.data.clean` rules; a message in two labels' catalogues is ambiguous and dropped)::

    label               catalogues                                              English messages
    database            postgres, psql, pg_*, libpq5, initdb, plpgsql ...       9,092
    dev-toolchain       binutils, gas, ld, gold, bfd, opcodes, gprof, elfutils  13,470 (+ make, gettext-tools)
    system-tools        coreutils, grep, sed, tar, bash, libc, systemd, wget ...  6,746
    version-control     git                                                      5,092
    security            gnupg2, gnutls30, Linux-PAM, shadow, polkit-1, mit-krb5  4,329
    desktop-ui          gtk20, glib20, gdk-pixbuf, at-spi2-core, gstreamer ...   3,537
    package-management  apt, dpkg, PackageKit, software-properties, appstream ... 2,973
    toolkit-api-docs    gtk20-properties (GTK widget property descriptions)      1,545
    keyboard-layouts    xkeyboard-config                                         1,404

The iso-codes catalogues (names of languages and countries) have no label: they are names, not messages,
and the corpus keeps them out of dev/devtest for the same reason.

What exists per language decides what can be tested: the big desktop languages translate almost every
catalogue, but on /usr/share/locale the low-resource demo languages (mya, khk, xho, nso) translate only
the GTK catalogues, so they can be tested on desktop-ui vs toolkit-api-docs only; that is why GTK's
property descriptions are a label of their own. A language keeps a label only with ``min_per_label``
test messages, and needs two labels to be tested at all.

Splits (by English message, so no test message in any language has its English source in training):

* test: per label, English messages are taken in order of how many test languages can use them (seeded
  ties), each giving one test example in every language that translates it and still needs examples of
  that label, until every language has ``test_per_label`` (or the label runs out). The text of a test
  example is the corpus builder's canonical translation (:func:`mt.data.splits.canonical`).
* train: the other English messages of each label, ``train_per_label`` of them (seeded sample).

Contamination: test sentences must not be in the MT model's training data. Two ways to get that:

1. ``--corpus DIR`` (an ``mt-data build gettext`` output): a test example is used only when neither its
   English nor its translation (normalised, :func:`mt.data.clean.norm_key`) is in that language's
   ``train/`` files; dev/devtest/mono strings qualify, and the counts dropped are reported.
2. build the task first and the corpus after it with ``mt-data build gettext --exclude DIR/exclude.txt``:
   ``exclude.txt`` holds every test sentence (English and translations), which the corpus builder then
   keeps out of train and mono. This costs each language the pairs of those strings.

``english_train="unseen"`` (with ``--corpus``) also keeps English training messages that the corpus trains
on out of the English set, so translate-train translates sentences the MT model never saw.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from eval.classification import Example, stats_table, write_task
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import ENGLISH
from mt.common.textio import read_lines
from mt.data import layout
from mt.data.clean import CleanConfig, clean_source, norm_key
from mt.data.gettext_corpus import DEMO_LANGS, discover, read_catalogues, resolve_langs
from mt.data.locales import classify_locale
from mt.data.mo import MoFormatError, read_mo
from mt.data.splits import canonical

LABEL_DOMAINS: dict[str, tuple[str, ...]] = {
    "database": ("postgres", "psql", "libpq5", "initdb", "plpgsql", "pgscripts", "ecpg", "ecpglib6"),
    "dev-toolchain": (
        "binutils",
        "gas",
        "ld",
        "gold",
        "bfd",
        "opcodes",
        "gprof",
        "elfutils",
        "make",
        "gettext-tools",
        "cpplib",
        "gcc",
    ),
    "system-tools": (
        "coreutils",
        "grep",
        "sed",
        "findutils",
        "tar",
        "diffutils",
        "wget",
        "wget-gnulib",
        "bash",
        "psmisc",
        "procps-ng",
        "xz",
        "man-db",
        "man-db-gnulib",
        "gettext-runtime",
        "net-tools",
        "libc",
        "systemd",
        "util-linux",
        "e2fsprogs",
        "parted",
        "sudo",
    ),
    "version-control": ("git", "subversion", "mercurial"),
    "security": ("gnupg2", "gnutls30", "Linux-PAM", "shadow", "polkit-1", "mit-krb5", "libgpg-error", "cryptsetup"),
    "desktop-ui": (
        "gtk20",
        "gtk30",
        "gtk40",
        "glib20",
        "gdk-pixbuf",
        "at-spi2-core",
        "gsettings-desktop-schemas",
        "xdg-user-dirs",
        "shared-mime-info",
        "gstreamer-1.0",
        "avahi",
    ),
    "package-management": (
        "apt",
        "libapt-pkg6.0",
        "dpkg",
        "dpkg-dev",
        "python-apt",
        "software-properties",
        "PackageKit",
        "appstream",
        "adduser",
    ),
    "toolkit-api-docs": ("gtk20-properties", "gtk30-properties"),
    "keyboard-layouts": ("xkeyboard-config",),
}
_DOMAIN_LABEL = {d: label for label, ds in LABEL_DOMAINS.items() for d in ds}
_VERSION_RE = re.compile(r"-\d+(?:\.\d+)*$")  # PostgreSQL's catalogues carry the major version: psql-15


def domain_label(stem: str) -> str | None:
    """The label of a catalogue (``.mo`` file stem), or None when it has none (iso-codes, unknown)."""
    if stem in _DOMAIN_LABEL:
        return _DOMAIN_LABEL[stem]
    base = _VERSION_RE.sub("", stem)
    if base in _DOMAIN_LABEL:
        return _DOMAIN_LABEL[base]
    return "database" if base.startswith("pg_") else None


@dataclass
class GettextTaskConfig:
    """The gettext task; its flags are build-classification's, so the gettext-only ones say "gettext:"."""

    out: str = arg(help="task directory to write", required=True)
    langs: str | list[str] = arg(  # "demo" | "all" | "deu_Latn,fra_Latn" | [...]
        "demo",
        "test languages: demo (default for gettext), all (default for chatterbot), or comma-separated FLORES-200 codes",
        show_default=False,
    )
    locale_dir: str = arg("/usr/share/locale", "gettext: tree of LOCALE/LC_MESSAGES/*.mo (default: %(default)s)")
    corpus: str | None = arg(  # mt-data build gettext output: decontaminate the test set against its train/
        None,
        "gettext: the mt-data build gettext corpus the MT model trains on; test pairs "
        "in its train/ files are not used (decontamination), tiers come from its stats.tsv",
    )
    train_per_label: int = arg(300, "gettext: English training messages per label (default: %(default)s)")
    test_per_label: int = arg(50, "gettext: test messages per label per language (default: %(default)s)")
    min_per_label: int = arg(
        20,
        "a language keeps a label only with this many test examples (default: 20 gettext, 5 chatterbot)",
        show_default=False,
    )
    english_train: str = arg(  # any | unseen (English the corpus does not train on; needs corpus)
        "any",
        "gettext: unseen keeps English the --corpus trains on out of the English training set, so "
        "translate-train translates sentences the MT model never saw (fewer examples; default: any)",
        choices=("any", "unseen"),
        show_default=False,
    )
    min_words: int = 3
    seed: int = arg(1, "random seed (default: %(default)s)")
    workers: int = arg(0, "gettext: processes reading catalogues (0: min(4, CPUs))")
    progress: bool = True


@dataclass
class GettextTaskResult:
    out: Path
    labels: list[str]
    langs: list[str]  # test languages written (English excluded)
    train: int
    test: dict[str, int]
    notes: list[str] = field(default_factory=list)
    contaminated: dict[str, int] = field(default_factory=dict)  # lang -> candidate pairs dropped as in MT train
    excluded_lines: int = 0
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------ reading


def english_labels(
    locale_dir: str | os.PathLike, cfg: CleanConfig, progress: bool = True
) -> tuple[dict[str, set[str]], Counter]:
    """Cleaned English message -> labels of the catalogues it occurs in (every locale folder is read:
    a catalogue's msgids are English whatever the folder). Also returns messages per catalogue stem."""
    by_locale, _ = discover(locale_dir)
    files = [p for loc in sorted(by_locale) for p in by_locale[loc] if domain_label(p.stem) is not None]
    labels: dict[str, set[str]] = defaultdict(set)
    per_domain: dict[str, set[str]] = defaultdict(set)
    cache: dict[str, str | None] = {}
    for path in tqdm(files, desc="English msgids", unit="file", disable=not progress, file=sys.stderr):
        try:
            cat = read_mo(path)
        except MoFormatError:
            continue  # the corpus builder reports corrupt files; here they only lose their msgids
        label = domain_label(path.stem)
        for e in cat.entries:
            for msgid in (e.msgid, e.msgid_plural):
                if msgid is None:
                    continue
                en = cache.get(msgid, "")
                if en == "":
                    text, reason = clean_source(msgid, cfg)
                    en = cache[msgid] = text if reason is None else None
                if en is not None:
                    labels[en].add(label)
                    per_domain[path.stem].add(en)
    return dict(labels), Counter({d: len(s) for d, s in per_domain.items()})


def corpus_train_keys(
    corpus: str | os.PathLike, langs: list[str]
) -> tuple[dict[str, tuple[set[str], set[str]]], set[str]]:
    """Normalised train sentences of a corpus: {lang: (English side, lang side)} for ``langs`` that have
    train files, and the English side of every train file (for ``english_train="unseen"``)."""
    root = Path(corpus)
    if not (root / "train").is_dir():
        raise UserError(
            f"--corpus {root}: no train/ folder; pass a corpus directory written by "
            "`mt-data build gettext` (it holds train/, dev/, devtest/, stats.tsv)"
        )
    per_lang: dict[str, tuple[set[str], set[str]]] = {}
    all_english: set[str] = set()
    for path in sorted((root / "train").glob(f"*.{ENGLISH}")):
        pair = path.name[: -len(ENGLISH) - 1]
        a, _, b = pair.partition("-")
        other = b if a == ENGLISH else a
        en = {norm_key(s) for s in read_lines(path, progress=False, bom=True)}
        all_english |= en
        if other in langs:
            prefix = layout.train_prefix(root, ENGLISH, other)
            tgt_path = Path(f"{prefix}.{other}")
            tgt = {norm_key(s) for s in read_lines(tgt_path, progress=False, bom=True)} if tgt_path.is_file() else set()
            per_lang[other] = (en, tgt)
    return per_lang, all_english


def corpus_tiers(corpus: str | os.PathLike) -> dict[str, str]:
    """lang -> tier from CORPUS/stats.tsv ({} when there is none)."""
    path = Path(corpus) / "stats.tsv"
    if not path.is_file():
        return {}
    from eval.gendir import load_stats

    return {str(lang): str(tier) for lang, tier in load_stats(path)["tier"].items()}


# ------------------------------------------------------------------------------------------------ selection


@dataclass
class _Group:
    """English messages equal under norm_key: one message for the split (case variants travel together)."""

    key: str
    text: str  # the representative (first in sorted order)
    variants: list[str]
    label: str


def group_messages(labels_of: dict[str, set[str]]) -> tuple[list[_Group], int]:
    """Messages grouped by normalised key; groups whose messages carry two labels are dropped (counted)."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for en in sorted(labels_of):
        by_key[norm_key(en)].append(en)
    groups, ambiguous = [], 0
    for key in sorted(by_key):
        variants = by_key[key]
        labels = set().union(*(labels_of[v] for v in variants))
        if len(labels) != 1:
            ambiguous += 1
            continue
        groups.append(_Group(key, variants[0], variants, next(iter(labels))))
    return groups, ambiguous


def select_test(
    groups: list[_Group],
    translations: dict[str, dict[str, str]],
    per_label: int,
    seed: int,
) -> tuple[set[str], dict[str, list[Example]], list[Example]]:
    """Choose the test messages (see the module docstring).

    ``translations[lang][key]`` is the usable (translated, not contaminated) test text of a group in a
    language. Returns the test keys, the test examples per language, and the English test examples.
    """
    langs = sorted(translations)
    by_label: dict[str, list[_Group]] = defaultdict(list)
    for g in groups:
        by_label[g.label].append(g)
    test_keys: set[str] = set()
    test: dict[str, list[Example]] = {lang: [] for lang in langs}
    english: list[Example] = []
    for label in sorted(by_label):
        rng = random.Random(f"test-{seed}-{label}")
        cands = by_label[label]
        tie = {g.key: rng.random() for g in cands}
        usable = {g.key: [lang for lang in langs if g.key in translations[lang]] for g in cands}
        cands = sorted(cands, key=lambda g: (-len(usable[g.key]), tie[g.key]))
        need = {lang: per_label for lang in langs}
        used_text: dict[str, set[str]] = {lang: set() for lang in langs}
        n_en = 0
        for g in cands:
            if not any(need.values()):
                break
            helps = [
                lang
                for lang in usable[g.key]
                if need[lang] and norm_key(translations[lang][g.key]) not in used_text[lang]
            ]
            if not helps:
                continue
            test_keys.add(g.key)
            for lang in helps:
                text = translations[lang][g.key]
                test[lang].append(Example(label, text))
                used_text[lang].add(norm_key(text))
                need[lang] -= 1
            if n_en < per_label:
                english.append(Example(label, g.text))
                n_en += 1
    return test_keys, test, english


def select_train(groups: list[_Group], blocked: set[str], per_label: int, seed: int) -> dict[str, list[Example]]:
    """Up to ``per_label`` English examples per label from groups whose key is not blocked (seeded)."""
    by_label: dict[str, list[_Group]] = defaultdict(list)
    for g in groups:
        if g.key not in blocked:
            by_label[g.label].append(g)
    out: dict[str, list[Example]] = {}
    for label in sorted(by_label):
        cands = by_label[label]
        rng = random.Random(f"train-{seed}-{label}")
        picked = cands if len(cands) <= per_label else rng.sample(cands, per_label)
        out[label] = [Example(label, g.text) for g in sorted(picked, key=lambda g: g.key)]
    return out


# ------------------------------------------------------------------------------------------------ building


def _check(cfg: GettextTaskConfig) -> None:
    for name in ("train_per_label", "test_per_label", "min_per_label", "min_words"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 1")
    if cfg.min_per_label > cfg.test_per_label:
        raise UserError(
            f"--min-per-label {cfg.min_per_label} > --test-per-label {cfg.test_per_label}: no label could ever be kept"
        )
    if cfg.english_train not in ("any", "unseen"):
        raise UserError(f"--english-train {cfg.english_train!r}: use any or unseen")
    if cfg.english_train == "unseen" and not cfg.corpus:
        raise UserError("--english-train unseen needs --corpus DIR (the corpus whose train English to avoid)")
    if cfg.corpus and not Path(cfg.corpus).is_dir():
        raise UserError(f"--corpus {cfg.corpus}: no such directory; pass an `mt-data build gettext` output")


def build_gettext_task(cfg: GettextTaskConfig) -> GettextTaskResult:
    """Build the task directory ``cfg.out`` from the gettext catalogues (see the module docstring)."""
    t0 = time.monotonic()
    _check(cfg)
    clean_cfg = CleanConfig(min_words=cfg.min_words)
    by_locale, _ = discover(cfg.locale_dir)
    present = {classify_locale(loc).code for loc in by_locale}
    codes, warnings = resolve_langs(cfg.langs, present)
    notes: list[str] = list(warnings)
    labels_of, per_domain = english_labels(cfg.locale_dir, clean_cfg, cfg.progress)
    if not labels_of:
        raise UserError(
            f"{cfg.locale_dir}: no catalogue with a label ({', '.join(sorted(_DOMAIN_LABEL)[:6])} ...); "
            "the task needs the .mo files of the software in eval.gettext_domains.LABEL_DOMAINS"
        )
    groups, ambiguous = group_messages(labels_of)
    cats = read_catalogues(
        cfg.locale_dir, codes, clean_cfg, progress=cfg.progress, jobs=cfg.workers or min(4, os.cpu_count() or 1)
    )
    langs = sorted(cats.pairs if codes is None else set(codes) & set(cats.pairs))

    train_keys: dict[str, tuple[set[str], set[str]]] = {}
    corpus_english: set[str] = set()
    tiers: dict[str, str] = {}
    if cfg.corpus:
        train_keys, corpus_english = corpus_train_keys(cfg.corpus, langs)
        tiers = corpus_tiers(cfg.corpus)
    contaminated: Counter = Counter()
    translations: dict[str, dict[str, str]] = {}
    for lang in langs:
        pairs = cats.pairs[lang]
        en_train, tgt_train = train_keys.get(lang, (set(), set()))
        usable: dict[str, str] = {}
        for g in groups:
            en = next((v for v in g.variants if v in pairs), None)
            if en is None:
                continue
            text = canonical(pairs[en])
            if g.key in en_train or norm_key(text) in tgt_train:
                contaminated[lang] += 1
                continue
            usable[g.key] = text
        translations[lang] = usable
        if cfg.corpus and lang not in train_keys:
            notes.append(f"{lang}: the corpus has no train files for it; its test set cannot be contaminated")

    test_keys, test, english_test = select_test(groups, translations, cfg.test_per_label, cfg.seed)
    blocked = set(test_keys) | (corpus_english if cfg.english_train == "unseen" else set())
    train_by_label = select_train(groups, blocked, cfg.train_per_label, cfg.seed)
    labels = []
    for label in sorted(LABEL_DOMAINS):
        n = len(train_by_label.get(label, []))
        if n >= cfg.min_per_label:
            labels.append(label)
        else:
            notes.append(
                f"label {label}: {n} English training messages < --min-per-label {cfg.min_per_label}; "
                "left out of the task"
            )
    if len(labels) < 2:
        raise UserError(
            f"{cfg.locale_dir}: only {len(labels)} label(s) have --min-per-label {cfg.min_per_label} "
            "English training messages; a classification task needs two"
        )
    train = [e for label in labels for e in train_by_label[label]]

    kept: dict[str, list[Example]] = {}
    for lang in langs:
        counts = Counter(e.label for e in test[lang])
        ok = [label for label in labels if counts[label] >= cfg.min_per_label]
        thin = {label: counts[label] for label in labels if 0 < counts[label] < cfg.min_per_label}
        if thin:
            notes.append(
                f"{lang}: dropped label(s) with < {cfg.min_per_label} test messages: "
                + ", ".join(f"{k} ({v})" for k, v in sorted(thin.items()))
            )
        if len(ok) < 2:
            notes.append(
                f"{lang}: not tested: only {len(ok)} label(s) with >= {cfg.min_per_label} test messages "
                f"({', '.join(ok) or 'none'}); one label measures nothing"
            )
            continue
        kept[lang] = sorted((e for e in test[lang] if e.label in ok), key=lambda e: (e.label, e.text))
    if not kept:
        raise UserError(
            f"no test language has two labels with --min-per-label {cfg.min_per_label} test messages "
            f"(tried {', '.join(langs) or 'none'}); add languages with --langs or lower --min-per-label"
        )
    en_test = sorted((e for e in english_test if e.label in labels), key=lambda e: (e.label, e.text))
    files = {**kept, ENGLISH: en_test}

    # every sentence of the test sets, for `mt-data build gettext --exclude` (corpus built after the task)
    exclude = sorted({g.text for g in groups if g.key in test_keys} | {e.text for lang in kept for e in kept[lang]})
    meta = {
        "source": "gettext",
        "labels": labels,
        "label_domains": {label: list(LABEL_DOMAINS[label]) for label in labels},
        "messages_per_domain": dict(sorted(per_domain.items())),
        "ambiguous_messages": ambiguous,
        "langs": sorted(kept),
        "tiers": {lang: tiers[lang] for lang in sorted(kept) if lang in tiers},
        "contaminated_dropped": dict(sorted(contaminated.items())),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "workers")},
        "notes": notes,
    }
    out = Path(cfg.out)
    write_task(out, train, files, meta)
    with atomic_write(out / "exclude.txt") as fh:
        fh.writelines(line + "\n" for line in exclude)
    result = GettextTaskResult(
        out=out,
        labels=labels,
        langs=sorted(kept),
        train=len(train),
        test={lang: len(ex) for lang, ex in files.items()},
        notes=notes,
        contaminated=dict(contaminated),
        excluded_lines=len(exclude),
        seconds=time.monotonic() - t0,
    )
    _report(result, train, files, cfg)
    return result


def _report(
    res: GettextTaskResult, train: list[Example], files: dict[str, list[Example]], cfg: GettextTaskConfig
) -> None:
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    order = {ENGLISH: 0}
    table = {
        f"train.{ENGLISH}": train,
        **{f"test.{lang}": files[lang] for lang in sorted(files, key=lambda x: (order.get(x, 1), x))},
    }
    print(stats_table(table))
    if cfg.corpus:
        dropped = ", ".join(f"{lang} {n}" for lang, n in sorted(res.contaminated.items()) if n)
        print(f"test candidates dropped as in the corpus train files ({cfg.corpus}): {dropped or 'none'}")
    else:
        print(
            f"no --corpus: test sentences are not checked against MT training data; build the MT corpus with "
            f"`mt-data build gettext --exclude {res.out / 'exclude.txt'}` to keep them out of it"
        )
    print(
        f"wrote {res.out}: {len(res.labels)} labels, {res.train} English training examples, "
        f"{len(res.langs)} test languages, exclude.txt ({res.excluded_lines} lines) in {res.seconds:.1f}s"
    )


__all__ = ["DEMO_LANGS", "LABEL_DOMAINS", "GettextTaskConfig", "build_gettext_task", "domain_label"]
