"""``mt-preprocess``: fairseq-preprocess for bitext -> ``{split}.{src}-{tgt}.{lang}.bin/.idx`` + ``dict.*.txt``.

Differences from fairseq that users ask for: ``--spm-model`` applies SentencePiece to raw text here (no
separate encode step); a prefix that is a FLORES-200 folder (``corpus/devtest``) reads
``corpus/devtest/{lang}.devtest``. Every sentence gets EOS appended (fairseq's default) and no language
token: the multilingual data loader adds those. All checks (files, languages, line counts, dictionaries)
run before anything is written, and each .bin/.idx appears atomically.
"""

from __future__ import annotations

import multiprocessing
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mt.common.errors import UserError, located
from mt.common.files import refuse_file_in_the_way, temp_name
from mt.common.flags import arg
from mt.common.langs import check_code
from mt.common.textio import chunks, count_lines
from mt.data.dictionary import UNK, Dictionary
from mt.data.indexed import IndexedDatasetWriter, best_dtype, dataset_exists
from mt.data.layout import bin_prefix
from mt.data.spm import SpmTokenizer

_BATCH = 2000


@dataclass
class PreprocessConfig:
    """``mt-preprocess`` (fairseq-preprocess's flags); each field with ``arg`` is also its flag."""

    source_lang: str = arg(help="source language code, e.g. eng_Latn", short="-s", required=True)
    target_lang: str = arg(help="target language code, e.g. deu_Latn", short="-t", required=True)
    trainpref: str | None = arg(None, "train prefix (P.{src}, P.{tgt}) or FLORES folder")
    # comma-separated: valid, valid1, valid2 ...
    validpref: str | None = arg(None, "comma-separated valid prefixes or FLORES folders")
    testpref: str | None = arg(None, "comma-separated test prefixes or FLORES folders")
    destdir: str = arg("data-bin", "output folder (default data-bin)", show_default=False)
    srcdict: str | None = arg(None, "source dictionary (dict.txt); built from --trainpref if absent")
    tgtdict: str | None = arg(None, "target dictionary")
    joined_dictionary: bool = arg(False, "one dictionary for both sides")
    workers: int = arg(1, "processes (output identical for any number)", show_default=False)
    spm_model: str | None = arg(None, "apply this SentencePiece model to raw text (else input is pieces)")
    # only when building a dictionary from --trainpref
    thresholdsrc: int = arg(0, "building a dict: drop source types seen fewer times")
    thresholdtgt: int = arg(0)
    nwordssrc: int = arg(-1, "building a dict: keep this many source types", show_default=False)
    nwordstgt: int = arg(-1, show_default=False)
    dataset_impl: str = arg("mmap", "accepted for fairseq recipes; always mmap", choices=["mmap"], show_default=False)


@dataclass
class FileStats:
    sents: int = 0
    tokens: int = 0
    unk: int = 0

    def add(self, other: "FileStats") -> None:
        self.sents += other.sents
        self.tokens += other.tokens
        self.unk += other.unk


# --------------------------------------------------------------------------------------------------
# input files
# --------------------------------------------------------------------------------------------------
def input_file(prefix: str, lang: str) -> Path:
    """fairseq's ``{prefix}.{lang}``, or ``{prefix}/{lang}.{basename}`` when the prefix is a FLORES folder."""
    p = Path(prefix)
    if p.is_dir():
        return p / f"{lang}.{p.name}"
    return Path(f"{prefix}.{lang}")


def splits(cfg: PreprocessConfig) -> list[tuple[str, str]]:
    """(subset, prefix) pairs: train; valid, valid1 ...; test, test1 ... (fairseq's naming)."""
    out = []
    if cfg.trainpref:
        out.append(("train", cfg.trainpref))
    for name, prefs in (("valid", cfg.validpref), ("test", cfg.testpref)):
        for k, pref in enumerate(p for p in (prefs or "").split(",") if p):
            out.append((name if k == 0 else f"{name}{k}", pref))
    return out


def line_offsets(path: Path, line_numbers: list[int]) -> list[int]:
    """Byte offset where each (0-based, ascending) line starts; the file size for lines past the end."""
    out: list[int] = []
    ti = 0
    while ti < len(line_numbers) and line_numbers[ti] == 0:
        out.append(0)
        ti += 1
    seen = pos = 0  # newlines before the current block, its byte position
    with open(path, "rb") as fh:
        while ti < len(line_numbers) and (block := fh.read(1 << 20)):
            nl = block.count(b"\n")
            at, k = -1, 0  # position of the k-th newline of this block
            while ti < len(line_numbers) and seen + nl >= line_numbers[ti]:
                while k < line_numbers[ti] - seen:  # line L starts after the L-th newline
                    at = block.find(b"\n", at + 1)
                    k += 1
                out.append(pos + at + 1)
                ti += 1
            seen += nl
            pos += len(block)
    size = path.stat().st_size
    return out + [size] * (len(line_numbers) - len(out))


# --------------------------------------------------------------------------------------------------
# encoding a byte range of a file (one worker's share)
# --------------------------------------------------------------------------------------------------
def _decoded_lines(path: Path, start: int, end: int, first_line: int) -> Iterator[str]:
    with open(path, "rb") as fh:
        fh.seek(start)
        offset, lineno = start, first_line
        while offset < end:
            raw = fh.readline()
            if not raw:
                break
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise located(
                    path,
                    lineno,
                    f"invalid UTF-8 at byte {offset + exc.start} of the file (byte {exc.start} of the line): "
                    "re-encode the file as UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`) or remove the line",
                ) from None
            yield text.rstrip("\r\n")
            offset += len(raw)
            lineno += 1


def _encode_range(
    path: Path, start: int, end: int, first_line: int, dictionary: Dictionary, tokenizer: SpmTokenizer | None, sink
) -> FileStats:
    stats = FileStats()
    unk = dictionary.unk_index

    def flush(batch: list[str]) -> None:
        pieces = tokenizer.encode_batch(batch) if tokenizer else [line.split() for line in batch]
        for toks in pieces:
            ids = dictionary.encode_pieces(toks, append_eos=True)
            stats.sents += 1
            stats.tokens += len(ids)
            stats.unk += sum(1 for t, i in zip(toks, ids) if i == unk and t != UNK)
            sink.add(ids)

    for batch in chunks(_decoded_lines(path, start, end, first_line), _BATCH):
        flush(batch)
    return stats


def _worker(args) -> FileStats:
    path, start, end, first_line, dictionary, tokenizer, tmp_prefix, dtype = args
    with IndexedDatasetWriter(tmp_prefix, dtype) as w:
        return _encode_range(path, start, end, first_line, dictionary, tokenizer, w)


def binarize_file(
    path: Path,
    n_lines: int,
    dictionary: Dictionary,
    tokenizer: SpmTokenizer | None,
    writer: IndexedDatasetWriter,
    workers: int = 1,
    pool=None,
) -> FileStats:
    """Encode every line of ``path`` into ``writer``; with workers > 1 contiguous line ranges run in parallel
    and are merged in order, so the output is byte-identical to a single-process run."""
    if workers <= 1 or n_lines < 2 * workers or pool is None:
        return _encode_range(path, 0, path.stat().st_size, 1, dictionary, tokenizer, writer)
    starts = [n_lines * k // workers for k in range(workers)]
    offsets = line_offsets(path, starts) + [path.stat().st_size]
    # the parts live in one temp folder beside the output, so a killed run's parts go with it (the next
    # writer of this prefix removes a dead run's temp folder: ``remove_stale_temps``)
    parts = writer.prefix.with_name(temp_name(f"{writer.prefix.name}.parts"))
    parts.mkdir()
    tmp = [parts / f"part{k}" for k in range(workers)]
    jobs = [
        (path, offsets[k], offsets[k + 1], starts[k] + 1, dictionary, tokenizer, tmp[k], writer.dtype)
        for k in range(workers)
    ]
    total = FileStats()
    try:
        for stats in pool.map(_worker, jobs):
            total.add(stats)
        for t in tmp:
            writer.add_dataset(t)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return total


# --------------------------------------------------------------------------------------------------
# dictionaries
# --------------------------------------------------------------------------------------------------
def build_dictionary(
    files: list[Path], tokenizer: SpmTokenizer | None, threshold: int = 0, nwords: int = -1
) -> Dictionary:
    """fairseq's order: by count descending, ties alphabetical; specials first."""
    counts: Counter[str] = Counter()
    for path in files:
        batch: list[str] = []
        for line in _decoded_lines(path, 0, path.stat().st_size, 1):
            batch.append(line)
            if len(batch) == _BATCH:
                for toks in tokenizer.encode_batch(batch) if tokenizer else [b.split() for b in batch]:
                    counts.update(toks)
                batch = []
        for toks in tokenizer.encode_batch(batch) if tokenizer else [b.split() for b in batch]:
            counts.update(toks)
    d = Dictionary()
    ranked = sorted(
        ((t, c) for t, c in counts.items() if t not in d.indices and c >= threshold), key=lambda x: (-x[1], x[0])
    )
    for tok, c in ranked[: nwords if nwords >= 0 else None]:
        d.add_symbol(tok, c)
    return d


def _load_dicts(
    cfg: PreprocessConfig, tokenizer: SpmTokenizer | None, inputs: dict[str, dict[str, Path]]
) -> tuple[Dictionary, Dictionary, list[str]]:
    """(source dict, target dict, notes). Order: --srcdict/--tgtdict, dict.txt beside --spm-model, built."""
    notes = []
    src_path, tgt_path = cfg.srcdict, cfg.tgtdict
    if cfg.joined_dictionary and src_path and tgt_path and Path(src_path).resolve() != Path(tgt_path).resolve():
        a, b = Dictionary.load(src_path), Dictionary.load(tgt_path)
        if a.symbols != b.symbols:
            raise UserError(
                f"--joined-dictionary with different --srcdict {src_path} and --tgtdict {tgt_path}: "
                "pass one dictionary (e.g. the dict.txt from mt-spm train)"
            )
    if cfg.joined_dictionary:
        src_path = tgt_path = src_path or tgt_path
    if not src_path and not tgt_path and cfg.spm_model:
        beside = Path(cfg.spm_model).with_name("dict.txt")
        if beside.is_file():
            src_path = tgt_path = str(beside)
            notes.append(f"using dictionary {beside} (beside --spm-model)")
    train = inputs.get("train")

    def get(path: str | None, side: str, threshold: int, nwords: int) -> Dictionary:
        if path:
            return Dictionary.load(path)
        if not train:
            raise UserError(
                f"no --{side}dict and no --trainpref to build one from: pass --{side}dict dict.txt "
                "(e.g. from mt-spm train)"
            )
        files = (
            list(train.values())
            if cfg.joined_dictionary
            else [train[cfg.source_lang if side == "src" else cfg.target_lang]]
        )
        notes.append(
            f"built the {'joined' if cfg.joined_dictionary else side} dictionary from {', '.join(map(str, files))}"
        )
        return build_dictionary(files, tokenizer, threshold, nwords)

    src = get(src_path, "src", cfg.thresholdsrc, cfg.nwordssrc)
    if cfg.joined_dictionary:
        return src, src, notes
    tgt = get(tgt_path, "tgt", cfg.thresholdtgt, cfg.nwordstgt) if (tgt_path != src_path or not src_path) else src
    return src, tgt, notes


def _check_or_plan_dict(dest: Path, name: str, d: Dictionary, origin: str) -> bool:
    """True when ``dest/name`` must be written; a UserError when an existing one differs."""
    path = dest / name
    if not path.is_file():
        return True
    have = Dictionary.load(path)
    if have.symbols != d.symbols:
        first = next((i for i, (a, b) in enumerate(zip(have.symbols, d.symbols)) if a != b), min(len(have), len(d)))
        there = have.symbols[first] if first < len(have) else "<end>"
        here = d.symbols[first] if first < len(d) else "<end>"
        raise UserError(
            f"{path} differs from the dictionary of this run ({origin}): {len(have)} vs {len(d)} entries, first "
            f"difference at index {first} ({there!r} there, {here!r} here). Every pair in one --destdir must use "
            f"the same dictionary: pass --srcdict {path} (with --joined-dictionary), or use a new --destdir"
        )
    return False


# --------------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------------
def preprocess(cfg: PreprocessConfig) -> list[Path]:
    """Binarize every split; returns the .bin/.idx prefixes written (skipped ones excluded)."""
    src, tgt = check_code(cfg.source_lang, "--source-lang"), check_code(cfg.target_lang, "--target-lang")
    if src == tgt:
        raise UserError(f"--source-lang and --target-lang are both {src}")
    todo = splits(cfg)
    if not todo:
        raise UserError("nothing to do: pass --trainpref, --validpref and/or --testpref")
    dest = Path(cfg.destdir)
    refuse_file_in_the_way(dest, "--destdir", folder=True)

    # 1. every input exists and each pair is line-aligned (before anything is written)
    inputs: dict[str, dict[str, Path]] = {}
    counts: dict[str, int] = {}
    for subset, prefix in todo:
        flag = "--trainpref" if subset == "train" else ("--validpref" if subset.startswith("valid") else "--testpref")
        files = {lang: input_file(prefix, lang) for lang in (src, tgt)}
        for lang, f in files.items():
            if not f.is_file():
                raise UserError(
                    f"{f}: input file not found ({flag} {prefix}): expected {prefix}.{src} and {prefix}.{tgt}, "
                    f"or a FLORES folder {prefix}/{{lang}}.{Path(prefix).name}"
                )
        n_src, n_tgt = count_lines(files[src]), count_lines(files[tgt])
        if n_src != n_tgt:
            short, long_ = (files[src], files[tgt]) if n_src < n_tgt else (files[tgt], files[src])
            raise UserError(
                f"{files[src]} has {n_src:,} lines but {files[tgt]} has {n_tgt:,}: the bitext is not line-aligned; "
                f"{short} ends after line {min(n_src, n_tgt):,}, so line {min(n_src, n_tgt) + 1:,} of {long_} has no "
                f"partner. Fix the files (one sentence per line on both sides)"
            )
        inputs[subset] = files
        counts[subset] = n_src

    # 2. dictionaries: load or build, and agree with any already in destdir
    tokenizer = SpmTokenizer(cfg.spm_model) if cfg.spm_model else None
    src_dict, tgt_dict, notes = _load_dicts(cfg, tokenizer, inputs)
    for note in notes:
        print(note, file=sys.stderr)
    origin = f"--srcdict {cfg.srcdict}" if cfg.srcdict else "this run's dictionary"
    plan = [(f"dict.{src}.txt", src_dict), (f"dict.{tgt}.txt", tgt_dict)]
    if cfg.joined_dictionary:
        plan.append(("dict.txt", src_dict))
    to_write = [(name, d) for name, d in plan if _check_or_plan_dict(dest, name, d, origin)]
    dest.mkdir(parents=True, exist_ok=True)
    for name, d in to_write:
        d.save(dest / name)
    print(f"[{src}] dictionary: {len(src_dict)} types; [{tgt}] dictionary: {len(tgt_dict)} types", file=sys.stderr)

    # 3. binarize
    written: list[Path] = []
    pool = multiprocessing.Pool(cfg.workers) if cfg.workers > 1 else None
    try:
        for subset, _ in todo:
            files = inputs[subset]
            prefixes = {lang: bin_prefix(dest, subset, src, tgt, lang) for lang in (src, tgt)}
            if _up_to_date(prefixes.values(), files.values()):
                print(
                    f"{subset}: {dest}/{subset}.{src}-{tgt}.{{{src},{tgt}}}.bin/.idx exists, skipping", file=sys.stderr
                )
                continue
            writers: list[IndexedDatasetWriter] = []
            try:
                for lang, d in ((src, src_dict), (tgt, tgt_dict)):
                    w = IndexedDatasetWriter(prefixes[lang], best_dtype(len(d)))
                    writers.append(w)
                    stats = binarize_file(files[lang], counts[subset], d, tokenizer, w, cfg.workers, pool)
                    rate = 100.0 * stats.unk / max(1, stats.tokens)
                    print(
                        f"[{lang}] {subset} {files[lang]}: {stats.sents:,} sents, {stats.tokens:,} tokens, "
                        f"{rate:.3f}% replaced by {UNK}",
                        file=sys.stderr,
                    )
                for w in writers:
                    w.finalize()
            except BaseException:
                for w in writers:
                    w.abort()
                raise
            written.extend(prefixes.values())
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    print(f"wrote {len(written)} binarized files to {dest}", file=sys.stderr)
    return written


def _up_to_date(prefixes, inputs) -> bool:
    if not all(dataset_exists(p) for p in prefixes):
        return False
    newest_input = max(Path(f).stat().st_mtime for f in inputs)
    oldest_output = min(Path(f"{p}{ext}").stat().st_mtime for p in prefixes for ext in (".bin", ".idx"))
    return oldest_output >= newest_input
