"""The chatterbot-corpus topic task: dialogue utterances labelled by topic (ai, food, money, sports ...).

``chatterbot-corpus`` 1.3.3 (PyPI, BSD) ships ``chatterbot_corpus/data/{language}/{topic}.yml`` for 28
language folders; each file holds ``conversations``: lists of utterances (a question and its answers).
English has 21 topics, 4,332 utterances but ~1,900 distinct ones (tech_support repeats 20 lines in 1,050
conversations); most other folders are smaller translations of some English files. With the defaults
(measured): 988 English training utterances in 21 topics; 21 test languages: 445-700 utterances in
16-18 topics for ita, jpn, kor, ukr, pes, zho_Hans/Hant; deu 80 (5 topics), fra 77 (5), rus 53 (3),
hin 14 (2); none of the low-resource demo languages. Its sentences are not in the gettext corpus, so
translate-test is never contaminated, but they are chit-chat, far from the software messages the MT model
is trained on.

Splits: the translated files mostly follow the English conversation order (54 of the 204 non-English
topic files that English also has hold exactly as many conversations), so conversations are split by *index* within
each topic: seeded, ``test_fraction`` of the indices go to test. English trains on the other indices;
every language tests on the test indices. Where a translated file is not index-aligned with English,
some test utterances may translate English training utterances: ``task.json`` counts the test examples
from aligned files (``aligned_test``) so the size of that risk is on record.

Labels are the file stems, with the few non-English stems mapped to the English topic
(:data:`TOPIC_ALIASES`); topics English lacks are dropped.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eval.classification import Example, stats_table, write_task
from mt.common.errors import UserError, located
from mt.common.flags import arg
from mt.common.langs import ENGLISH
from mt.data.clean import norm_key, normalize_ws

# chatterbot-corpus folder -> FLORES-200 code (hinglish is romanised Hindi-English code-mixing: no code)
FOLDER_CODES: dict[str, str] = {
    "english": "eng_Latn",
    "bengali": "ben_Beng",
    "chinese": "zho_Hans",
    "dutch": "nld_Latn",
    "french": "fra_Latn",
    "german": "deu_Latn",
    "hebrew": "heb_Hebr",
    "hindi": "hin_Deva",
    "indonesian": "ind_Latn",
    "italian": "ita_Latn",
    "japanese": "jpn_Jpan",
    "korean": "kor_Hang",
    "marathi": "mar_Deva",
    "oriya": "ory_Orya",
    "persian": "pes_Arab",
    "portuguese": "por_Latn",
    "russian": "rus_Cyrl",
    "spanish": "spa_Latn",
    "swedish": "swe_Latn",
    "tamil": "tam_Taml",
    "telugu": "tel_Telu",
    "thai": "tha_Thai",
    "traditionalchinese": "zho_Hant",
    "turkish": "tur_Latn",
    "ukrainian": "ukr_Cyrl",
    "urdu": "urd_Arab",
    "yoruba": "yor_Latn",
}
TOPIC_ALIASES: dict[str, str] = {
    "computer": "computers",
    "coversations": "conversations",
    "greeting": "greetings",
    "sport": "sports",
    "emotions": "emotion",
    "profile": "botprofile",
    "perfilbot": "botprofile",
    "ia": "ai",
    "dinero": "money",
    "emociones": "emotion",
    "psicologia": "psychology",
}


def default_dir() -> Path | None:
    """``chatterbot_corpus/data`` of the installed wheel, found without importing it (None if absent)."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@dataclass
class ChatterbotTaskConfig:
    out: str
    chatterbot_dir: str | None = arg(
        None, "chatterbot: the chatterbot_corpus/data directory (default: the installed chatterbot-corpus wheel)"
    )
    langs: str | list[str] = "all"  # "all" | "demo" | "deu_Latn,fra_Latn" | [...]
    test_fraction: float = arg(
        0.5, "chatterbot: share of each topic's conversations used for test (default: %(default)s)"
    )
    min_per_label: int = 5
    seed: int = 1


@dataclass
class ChatterbotTaskResult:
    out: Path
    labels: list[str]
    langs: list[str]
    train: int
    test: dict[str, int]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def topic_of(stem: str) -> str:
    s = stem.lower()
    return TOPIC_ALIASES.get(s, s)


def read_topic_file(path: Path) -> list[list[str]]:
    """The conversations of one YAML file: lists of utterances (non-text items are skipped)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise located(path, None, f"not a readable chatterbot YAML file ({exc})") from None
    convs = data.get("conversations", []) if isinstance(data, dict) else []
    out = []
    for conv in convs if isinstance(convs, list) else []:
        items = conv if isinstance(conv, list) else [conv]
        texts = [normalize_ws(str(x)) for x in items if isinstance(x, (str, int, float)) and not isinstance(x, bool)]
        out.append([t for t in texts if t])
    return out


def read_corpus(root: Path) -> dict[str, dict[str, list[list[str]]]]:
    """code -> topic -> conversations, for the folders of :data:`FOLDER_CODES`."""
    out: dict[str, dict[str, list[list[str]]]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        code = FOLDER_CODES.get(folder.name)
        if code is None:
            continue
        topics: dict[str, list[list[str]]] = {}
        for path in sorted(folder.glob("*.yml")):
            topics.setdefault(topic_of(path.stem), []).extend(read_topic_file(path))
        if topics:
            out[code] = topics
    return out


def _resolve_langs(spec: str | list[str], present: list[str]) -> list[str]:
    from mt.data.gettext_corpus import DEMO_LANGS

    spec = spec.strip() if isinstance(spec, str) else ",".join(spec)
    if spec == "all":
        return [c for c in present if c != ENGLISH]
    if spec == "demo":
        return [c for c in DEMO_LANGS if c in present]
    codes = [c.strip() for c in spec.split(",") if c.strip()]
    missing = [c for c in codes if c not in present]
    if missing:
        raise UserError(
            f"--langs {','.join(missing)}: chatterbot-corpus has no folder for it "
            f"(it has {', '.join(c for c in present if c != ENGLISH)})"
        )
    return codes


def build_chatterbot_task(cfg: ChatterbotTaskConfig) -> ChatterbotTaskResult:
    """Build the task directory ``cfg.out`` from chatterbot-corpus (see the module docstring)."""
    t0 = time.monotonic()
    if not 0.0 < cfg.test_fraction < 1.0:
        raise UserError(f"--test-fraction {cfg.test_fraction}: must be between 0 and 1")
    root = Path(cfg.chatterbot_dir) if cfg.chatterbot_dir else default_dir()
    if root is None or not root.is_dir():
        raise UserError(
            f"chatterbot-corpus data not found{f' at {root}' if root else ''}: "
            "pip install chatterbot-corpus==1.3.3, or pass --chatterbot-dir .../chatterbot_corpus/data"
        )
    corpus = read_corpus(root)
    if ENGLISH not in corpus:
        raise UserError(f"{root}: no english/ folder; pass the chatterbot_corpus/data directory")
    langs = _resolve_langs(cfg.langs, sorted(corpus))
    english = corpus[ENGLISH]
    notes: list[str] = []
    test_idx: dict[str, set[int]] = {}
    for topic, convs in sorted(english.items()):
        idx = list(range(len(convs)))
        random.Random(f"chatterbot-{cfg.seed}-{topic}").shuffle(idx)
        n_test = round(len(idx) * cfg.test_fraction)
        test_idx[topic] = set(idx[:n_test])

    def examples(topic: str, convs: list[list[str]], test: bool) -> list[Example]:
        return [Example(topic, u) for i, conv in enumerate(convs) if (i in test_idx[topic]) == test for u in conv]

    def dedup(ex: list[Example]) -> list[Example]:
        """One example per normalised text; a text under two topics is ambiguous and dropped."""
        by_key: dict[str, set[str]] = defaultdict(set)
        first: dict[str, Example] = {}
        for e in ex:
            k = norm_key(e.text)
            by_key[k].add(e.label)
            first.setdefault(k, e)
        return sorted((first[k] for k, labels in by_key.items() if len(labels) == 1), key=lambda e: (e.label, e.text))

    train = dedup([e for topic, convs in english.items() for e in examples(topic, convs, test=False)])
    train_keys = {norm_key(e.text) for e in train}
    labels = sorted(label for label, n in Counter(e.label for e in train).items() if n >= cfg.min_per_label)
    train = [e for e in train if e.label in labels]
    files: dict[str, list[Example]] = {}
    aligned: dict[str, int] = {}
    for lang in [ENGLISH, *langs]:
        topics = corpus[lang]
        extra = sorted(set(topics) - set(english))
        if extra and lang != ENGLISH:
            notes.append(f"{lang}: topic(s) English lacks, left out: {', '.join(extra)}")
        ex = [e for t in sorted(set(topics) & set(labels)) for e in examples(t, topics[t], test=True)]
        ex = [e for e in dedup(ex) if norm_key(e.text) not in train_keys]  # an utterance copied verbatim
        counts = Counter(e.label for e in ex)
        ok = {label for label in labels if counts[label] >= cfg.min_per_label}
        ex = [e for e in ex if e.label in ok]
        if len(ok) < 2:
            notes.append(f"{lang}: not tested: {len(ok)} topic(s) with >= {cfg.min_per_label} test utterances")
            continue
        files[lang] = ex
        aligned[lang] = sum(counts[t] for t in ok if len(topics[t]) == len(english[t]))
    tested = [lang for lang in files if lang != ENGLISH]
    if not tested:
        raise UserError(
            f"no chatterbot language has two topics with --min-per-label {cfg.min_per_label} test "
            f"utterances (tried {', '.join(langs) or 'none'})"
        )
    meta = {
        "source": "chatterbot-corpus 1.3.3",
        "data_dir": str(root),
        "labels": labels,
        "langs": tested,
        "aligned_test": {lang: aligned[lang] for lang in tested},
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "notes": notes,
    }
    out = Path(cfg.out)
    write_task(out, train, files, meta)
    res = ChatterbotTaskResult(
        out, labels, tested, len(train), {k: len(v) for k, v in files.items()}, notes, time.monotonic() - t0
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(stats_table({f"train.{ENGLISH}": train, **{f"test.{lang}": files[lang] for lang in files}}))
    print(
        "test utterances from files index-aligned with English (no leak possible): "
        + ", ".join(f"{lang} {aligned[lang]}/{len(files[lang])}" for lang in tested)
    )
    print(
        f"wrote {out}: {len(labels)} topics, {len(train)} English training utterances, "
        f"{len(tested)} test languages in {res.seconds:.1f}s"
    )
    return res
