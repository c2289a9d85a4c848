"""Training data for ``mine-train-encoder``: from a corpus directory to binarized directions.

LASER models (``prepare_laser_data``), under ``{save_dir}/data/``::

    text/train/eng_Latn-{x}.{eng_Latn,x}   the corpus bitext, LASER-normalised (``LaserTextNormalizer``:
    text/train/{x}-{pivot}.{x,pivot}       lower-cased, Moses punctuation) since the exported encoder
    text/dev/{lang}.dev                    sees its input through the same function at inference
    spm/                                   joint SentencePiece + dict.txt (``mt-spm train``)
    bin/                                   ``mt-preprocess`` output, one joined dictionary

The ``{x}-{pivot}`` bitext is joined through English (two translations of the same English string),
which a multi-way corpus such as the gettext one has in plenty. Directions: every language into
English and into the pivot, English into the pivot (as LASER: all languages into English and Spanish).

Students (``prepare_student_data``), under ``{save_dir}/data/``::

    teacher/eng_Latn.txt + eng_Latn.*.npy  the English sentences and their teacher embeddings
                                           (an EmbeddingSet, computed once by ``mine-embed``'s code)
    text/...                               the student's normalised text (and its own SentencePiece)
    bin/train.{x}-eng_Zxxx.{x}             student input (pieces + </s>)
    bin/train.{x}-eng_Zxxx.eng_Zxxx        its target: the teacher row of the English translation,
                                           stored as one "token" id = row + ROW_OFFSET

``eng_Zxxx`` ("English, unwritten", ISO 15924 Zxxx) names the teacher's embedding space as a target
language, so students train through ``mt.train.trainer``'s loop unchanged: the direction ``xho_Latn-eng_Zxxx``
maps Xhosa sentences onto the teacher's embeddings of their English translations, and
``eng_Latn-eng_Zxxx`` maps English onto its own teacher embedding (which keeps the student in the
teacher's space).

Each step is skipped when its outputs are up to date (a fingerprint of inputs and options), so a re-run
of the same command goes straight to training, which resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mining.laser_training import ROW_OFFSET
from mt.common import textio
from mt.common.errors import UserError
from mt.common.files import atomic_write, file_identity, owned_dir, remove_owned_dir
from mt.common.langs import ENGLISH, check_code, is_code, lang_token
from mt.data.dictionary import Dictionary
from mt.data.indexed import IndexedDatasetWriter, best_dtype
from mt.data.layout import bin_prefix, eval_file

TEACHER_SPACE = "eng_Zxxx"  # the teacher's English embeddings, as a target "language" (see module docstring)


# --- corpus ------------------------------------------------------------------------------------------
def corpus_bitexts(corpus: str | Path) -> dict[str, tuple[Path, Path]]:
    """language -> (English file, its file) for every ``train/{a}-{b}`` pair with English on one side."""
    train = Path(corpus) / "train"
    if not train.is_dir():
        raise UserError(f"{train}: no train/ folder in --corpus {corpus} (build one with `mt-data build gettext`)")
    out: dict[str, tuple[Path, Path]] = {}
    for p in sorted(train.iterdir()):
        stem, _, lang = p.name.rpartition(".")
        a, _, b = stem.partition("-")
        if not (is_code(a) and is_code(b) and lang == a and ENGLISH in (a, b) and a != b):
            continue
        other = b if a == ENGLISH else a
        eng_file, other_file = train / f"{stem}.{ENGLISH}", train / f"{stem}.{other}"
        if eng_file.is_file() and other_file.is_file():
            out[other] = (eng_file, other_file)
    if not out:
        raise UserError(f"{train}: no English bitext (files named eng_Latn-xxx_Yyyy.{{eng_Latn,xxx_Yyyy}})")
    return out


def read_bitext(eng_file: Path, other_file: Path) -> list[tuple[str, str]]:
    eng, other = list(textio.read_lines(eng_file, progress=False)), list(textio.read_lines(other_file, progress=False))
    if len(eng) != len(other):
        raise UserError(
            f"{eng_file} has {len(eng)} lines but {other_file} has {len(other)}: the bitext is not "
            "line-aligned; rebuild the corpus"
        )
    return list(zip(eng, other))


def _normalizer():
    from mining.encoders.laser import LaserTextNormalizer

    return LaserTextNormalizer()


def _fingerprint(spec: dict, files: Iterable[Path]) -> str:
    stamp = {"spec": spec, "files": [(str(p.resolve()), file_identity(p)) for p in sorted(files)]}  # by content
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()


def _done(marker: Path, fingerprint: str) -> bool:
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: prepare again
        return False
    return isinstance(saved, dict) and saved.get("fingerprint") == fingerprint


def _mark(marker: Path, fingerprint: str, **info: object) -> None:
    with atomic_write(marker) as fh:
        json.dump({"fingerprint": fingerprint, **info}, fh, indent=1)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with atomic_write(path) as fh:
        for line in lines:
            fh.write(line + "\n")


def _say(msg: str) -> None:
    print(f"mine-train-encoder: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _logged(path: Path, what: str):
    """Send the chatty output of mt-spm / mt-preprocess to ``path`` (errors still raise as usual)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _say(f"{what} (details in {path})")
    with open(path, "a", encoding="utf-8") as fh, contextlib.redirect_stderr(fh):
        yield


def select_langs(available: Sequence[str], langs: Sequence[str], exclude: Sequence[str]) -> list[str]:
    for code in [*langs, *exclude]:
        check_code(code, "--langs/--exclude-langs")
    missing = [c for c in langs if c not in available and c != ENGLISH]
    if missing:
        raise UserError(
            f"--langs {','.join(missing)}: no English bitext for them in the corpus "
            f"(it has {', '.join(sorted(available))})"
        )
    chosen = [c for c in (langs or sorted(available)) if c != ENGLISH and c not in exclude]
    if not chosen:
        raise UserError("no languages left to train on: check --langs / --exclude-langs")
    return chosen


# --- LASER (translation) data ------------------------------------------------------------------------
@dataclass
class LaserDataPlan:
    """What the trainer needs: the binarized folder, the SentencePiece model and the directions."""

    bin_dir: str
    spm_model: str
    langs: list[str]
    pivot: str
    directions: list[str] = field(default_factory=list)
    pair_sizes: dict[str, int] = field(default_factory=dict)


def prepare_laser_data(
    corpus: str | Path,
    data_dir: str | Path,
    langs: Sequence[str] = (),
    exclude: Sequence[str] = (),
    pivot: str = "",
    vocab_size: int = 8000,
    spm_temperature: float = 5.0,
    seed: int = 1,
) -> LaserDataPlan:
    """Normalise, join the pivot bitext, train SentencePiece and binarize (each step skipped when done)."""
    from mt.data.preprocess import PreprocessConfig, preprocess
    from mt.data.spm import SpmTrainConfig
    from mt.data.spm import train as train_spm

    data_dir = Path(data_dir)
    bitexts = corpus_bitexts(corpus)
    chosen = select_langs(list(bitexts), langs, exclude)
    if pivot:
        check_code(pivot, "--pivot")
        if pivot not in chosen:
            raise UserError(f"--pivot {pivot} is not among the training languages ({', '.join(chosen)})")
    else:  # LASER used Spanish; here: the language with the most bitext
        sizes = {c: bitexts[c][0].stat().st_size for c in chosen}
        pivot = max(sorted(sizes), key=lambda c: sizes[c])
    if len(chosen) < 2:
        raise UserError(
            f"a LASER model needs at least two languages besides English (got {', '.join(chosen)}): "
            "one of them is the second target language (--pivot)"
        )
    text = data_dir / "text"
    dev_files = {c: eval_file(corpus, "dev", c) for c in [ENGLISH, *chosen]}
    inputs = [p for c in chosen for p in bitexts[c]] + [p for p in dev_files.values() if p.is_file()]
    spec = {"langs": chosen, "pivot": pivot, "format": 1}
    fp = _fingerprint(spec, inputs)
    marker = text / "prepared.json"
    pair_sizes: dict[str, int]
    if _done(marker, fp):
        pair_sizes = json.loads(marker.read_text())["pair_sizes"]
    else:
        # every file is read (and checked) before anything is deleted or written: a bad corpus leaves no half data
        raw = {c: read_bitext(*bitexts[c]) for c in chosen}
        dev_text = {c: list(textio.read_lines(path, progress=False)) for c, path in dev_files.items() if path.is_file()}
        remove_owned_dir(text)
        owned_dir(text)
        norm = _normalizer()
        pair_sizes = {}
        pivot_of: dict[str, str] = {}
        normed: dict[str, list[tuple[str, str]]] = {}
        for c in chosen:
            rows = []
            for e, x in raw[c]:
                e, x = norm(e).strip(), norm(x).strip()
                if e and x:
                    rows.append((e, x))
            normed[c] = rows
            _write_lines(text / "train" / f"{ENGLISH}-{c}.{ENGLISH}", (e for e, _ in rows))
            _write_lines(text / "train" / f"{ENGLISH}-{c}.{c}", (x for _, x in rows))
            pair_sizes[f"{ENGLISH}-{c}"] = len(rows)
        for e, p in normed[pivot]:
            pivot_of.setdefault(e, p)
        for c in chosen:
            if c == pivot:
                continue
            seen, joined = set(), []
            for e, x in normed[c]:
                if e in pivot_of and (x, pivot_of[e]) not in seen:
                    seen.add((x, pivot_of[e]))
                    joined.append((x, pivot_of[e]))
            if joined:
                _write_lines(text / "train" / f"{c}-{pivot}.{c}", (x for x, _ in joined))
                _write_lines(text / "train" / f"{c}-{pivot}.{pivot}", (p for _, p in joined))
                pair_sizes[f"{c}-{pivot}"] = len(joined)
        for c, lines in dev_text.items():
            _write_lines(text / "dev" / f"{c}.dev", (norm(s).strip() for s in lines))
        _mark(marker, fp, pair_sizes=pair_sizes)
        _say(f"normalised bitext in {text}/train: " + ", ".join(f"{k} {v}" for k, v in pair_sizes.items()))

    spm_dir, bin_dir = data_dir / "spm", data_dir / "bin"
    with _logged(data_dir / "prepare.log", f"SentencePiece ({vocab_size} pieces) and binarized data in {data_dir}"):
        train_spm(
            SpmTrainConfig(
                out=str(spm_dir),
                corpus=str(text),
                vocab_size=vocab_size,
                sampling_temperature=spm_temperature,
                seed=seed,
            ),
            progress=False,
        )
        for pair in pair_sizes:
            a, b = pair.split("-")
            has_dev = (text / "dev" / f"{a}.dev").is_file() and (text / "dev" / f"{b}.dev").is_file()
            preprocess(
                PreprocessConfig(
                    source_lang=a,
                    target_lang=b,
                    trainpref=str(text / "train" / pair),
                    validpref=str(text / "dev") if has_dev else None,
                    spm_model=str(spm_dir / "spm.model"),
                    srcdict=str(spm_dir / "dict.txt"),
                    joined_dictionary=True,
                    destdir=str(bin_dir),
                )
            )
    directions = [f"{c}-{ENGLISH}" for c in chosen]
    directions += [f"{c}-{pivot}" for c in chosen if f"{c}-{pivot}" in pair_sizes]
    directions.append(f"{ENGLISH}-{pivot}")
    return LaserDataPlan(str(bin_dir), str(spm_dir / "spm.model"), chosen, pivot, directions, pair_sizes)


# --- student (teacher-student) data ------------------------------------------------------------------
@dataclass
class StudentDataPlan:
    bin_dir: str
    spm_model: str
    teacher_emb: str  # EmbeddingSet prefix of the English sentences
    langs: list[str]
    directions: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)


def teacher_dictionary(indices: dict[str, int]) -> Dictionary:
    """A fairseq Dictionary with exactly the teacher's ids (gaps filled with unused symbols)."""
    by_id: dict[int, str] = {}
    for sym, i in indices.items():
        by_id.setdefault(int(i), sym)
    d = Dictionary()
    for i in range(4, max(by_id) + 1):
        d.add_symbol(by_id.get(i, f"madeupword{i:06d}"), 1)
    return d


def prepare_student_data(
    corpus: str | Path,
    data_dir: str | Path,
    langs: Sequence[str],
    teacher,
    teacher_spec: str,
    spm: str = "own",
    vocab_size: int = 4000,
    eng_sentences: int = 10000,
    seed: int = 1,
    progress: bool = True,
) -> StudentDataPlan:
    """English sentences -> teacher EmbeddingSet; student text -> SentencePiece (own, or the teacher's);
    binarized directions ``{x}-eng_Zxxx`` and ``eng_Latn-eng_Zxxx`` (train, and valid from dev)."""
    from mining.embed import embed_file
    from mining.embedding_store import EmbeddingSet
    from mt.data.spm import SpmTokenizer, SpmTrainConfig
    from mt.data.spm import train as train_spm

    data_dir = Path(data_dir)
    bitexts = corpus_bitexts(corpus)
    chosen = select_langs(list(bitexts), langs, ())
    if spm not in ("own", "teacher"):
        raise UserError(f"--spm {spm!r}: use own (train one on the student's text) or teacher")
    teacher_spm = getattr(getattr(teacher, "tokenizer", None), "path", None)
    if spm == "teacher" and teacher_spm is None:
        raise UserError(
            f"--spm teacher: the teacher {teacher_spec!r} has no SentencePiece model of its own "
            "(only LASER-format encoders do); use --spm own"
        )
    others = sorted(c for c in bitexts if c not in chosen)
    dev_files = {c: eval_file(corpus, "dev", c) for c in [ENGLISH, *chosen]}
    inputs = [p for c in bitexts for p in bitexts[c]] + [p for p in dev_files.values() if p.is_file()]
    spec = {
        "langs": chosen,
        "teacher": teacher_spec,
        "eng_sentences": eng_sentences,
        "seed": seed,
        "spm": spm,
        "vocab_size": vocab_size,
        "format": 1,
    }
    fp = _fingerprint(spec, inputs)
    marker = data_dir / "prepared.json"
    teacher_prefix = data_dir / "teacher" / ENGLISH
    bin_dir = data_dir / "bin"
    spm_model = Path(teacher_spm) if spm == "teacher" else data_dir / "spm" / "spm.model"
    directions = [f"{c}-{TEACHER_SPACE}" for c in chosen] + [f"{ENGLISH}-{TEACHER_SPACE}"]
    if _done(marker, fp):
        saved = json.loads(marker.read_text())
        return StudentDataPlan(str(bin_dir), str(spm_model), str(teacher_prefix), chosen, directions, saved["sizes"])

    # 1. sentences: the students' bitext, extra English from the rest of the corpus, dev for validation
    #    (all read and checked before the stale data of an earlier run is deleted)
    pairs = {c: [(e, x) for e, x in read_bitext(*bitexts[c]) if e.strip() and x.strip()] for c in chosen}
    own_eng = list(dict.fromkeys(e for c in chosen for e, _ in pairs[c]))
    pool = sorted(
        {e for c in others for e in textio.read_lines(bitexts[c][0], progress=False) if e.strip()} - set(own_eng)
    )
    rng = np.random.default_rng(seed)
    extra = [pool[i] for i in sorted(rng.permutation(len(pool))[: max(eng_sentences, 0)])]
    dev = {c: list(textio.read_lines(p, progress=False)) for c, p in dev_files.items() if p.is_file()}
    dev_langs = [c for c in chosen if c in dev and ENGLISH in dev and len(dev[c]) == len(dev[ENGLISH])]
    dev_eng = dev.get(ENGLISH, []) if dev_langs else []
    english = list(dict.fromkeys(own_eng + extra + dev_eng))
    row = {e: i for i, e in enumerate(english)}
    for sub in ("teacher", "text", "spm", "bin"):
        remove_owned_dir(data_dir / sub)
        owned_dir(data_dir / sub)

    # 2. teacher embeddings of every English sentence, once
    _write_lines(teacher_prefix.with_suffix(".txt"), english)
    _say(f"teacher {teacher_spec}: embedding {len(english)} English sentences -> {teacher_prefix}")
    embed_file(
        str(teacher_prefix.with_suffix(".txt")), str(teacher_prefix), ENGLISH, encoder=teacher, progress=progress
    )
    dim = EmbeddingSet.open(teacher_prefix).dim

    # 3. the student's text (normalised as at inference) and its SentencePiece model / dictionary
    norm = _normalizer()
    text = data_dir / "text"
    src_side = {c: [norm(x).strip() for _, x in pairs[c]] for c in chosen}
    eng_norm = {e: norm(e).strip() for e in english}
    for c in chosen:
        _write_lines(text / "train" / f"{ENGLISH}-{c}.{c}", src_side[c])
        _write_lines(text / "train" / f"{ENGLISH}-{c}.{ENGLISH}", (eng_norm[e] for e, _ in pairs[c]))
    _write_lines(text / f"extra.{ENGLISH}", (eng_norm[e] for e in extra))
    if spm == "own":
        with _logged(data_dir / "prepare.log", f"the student's SentencePiece ({vocab_size} pieces)"):
            train_spm(
                SpmTrainConfig(
                    out=str(data_dir / "spm"),
                    corpus=str(text),
                    inputs=[str(text / f"extra.{ENGLISH}")],
                    langs=[TEACHER_SPACE],
                    vocab_size=vocab_size,
                    seed=seed,
                ),
                progress=False,
            )
        dictionary = Dictionary.load(data_dir / "spm" / "dict.txt")
    else:
        dictionary = teacher_dictionary(teacher.indices)
        for code in sorted({*chosen, ENGLISH, TEACHER_SPACE}):
            dictionary.add_symbol(lang_token(code), 1)
    dictionary.save(bin_dir / "dict.txt")
    tok = SpmTokenizer(spm_model)

    # 4. binarize: source pieces + </s>; target = teacher row + ROW_OFFSET (one "token")
    def write(split: str, src_lang: str, sources: list[str], eng_rows: list[int]) -> int:
        keep = [i for i, s in enumerate(sources) if s]
        src_prefix = bin_prefix(bin_dir, split, src_lang, TEACHER_SPACE, src_lang)
        tgt_prefix = bin_prefix(bin_dir, split, src_lang, TEACHER_SPACE, TEACHER_SPACE)
        with IndexedDatasetWriter(src_prefix, best_dtype(len(dictionary))) as w:
            for pieces in tok.encode_batch([sources[i] for i in keep]):
                w.add(dictionary.encode_pieces(pieces))
        with IndexedDatasetWriter(tgt_prefix, np.int32) as w:
            for i in keep:
                w.add([eng_rows[i] + ROW_OFFSET])
        return len(keep)

    sizes = {}
    for c in chosen:
        sizes[f"{c}-{TEACHER_SPACE}"] = write("train", c, src_side[c], [row[e] for e, _ in pairs[c]])
    eng_train = own_eng + extra
    sizes[f"{ENGLISH}-{TEACHER_SPACE}"] = write(
        "train", ENGLISH, [eng_norm[e] for e in eng_train], [row[e] for e in eng_train]
    )
    if dev_langs:
        dev_rows = [row[e] for e in dev_eng]
        for c in dev_langs:
            write("valid", c, [norm(s).strip() for s in dev[c]], dev_rows)
        write("valid", ENGLISH, [eng_norm[e] for e in dev_eng], dev_rows)
    _mark(marker, fp, sizes=sizes, dim=dim, english=len(english))
    _say(f"student data in {bin_dir}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    return StudentDataPlan(str(bin_dir), str(spm_model), str(teacher_prefix), chosen, directions, sizes)
