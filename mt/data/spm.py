"""``mt-spm``: a joint SentencePiece model over many languages, and the fairseq ``dict.txt`` that goes with it.

Training text is sampled across languages with temperature T (language i gets p_i ∝ n_i^(1/T), NLLB used
T=5): without it the vocabulary is spent on the high-resource languages and low-resource scripts fall
apart into characters or ``<unk>``.

``dict.txt`` lists the SentencePiece pieces in SentencePiece id order after fairseq's four specials, so
a piece's dictionary index equals its SentencePiece id; the ``__xxx_Yyyy__`` language tokens come last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from mt.common.errors import UserError
from mt.common.files import (
    atomic_write,
    file_identity,
    refuse_file_in_the_way,
    refuse_overwriting_input,
    remove_stale_temps,
    temp_name,
)
from mt.common.flags import arg
from mt.common.langs import check_code, is_code, lang_token, token_lang
from mt.common.textio import chunks
from mt.data.dictionary import BOS, EOS, PAD, UNK

_TRAIN_RE = re.compile(
    r"^(?P<src>[a-z]{3}_[A-Z][a-z]{3})-(?P<tgt>[a-z]{3}_[A-Z][a-z]{3})\.(?P<lang>[a-z]{3}_[A-Z][a-z]{3})$"
)
OUTPUTS = ("spm.model", "spm.vocab", "dict.txt", "spm.config.json")
SPM_HINT = "pass the spm.model that `mt-spm train` wrote"


def _sentencepiece():
    import sentencepiece

    return sentencepiece


# --------------------------------------------------------------------------------------------------
# tokenizer others import
# --------------------------------------------------------------------------------------------------
class SpmTokenizer:
    """Text <-> SentencePiece pieces: the one loader of SentencePiece models (training data, decoding, chrF
    during validation, spBLEU, LASER, import). Picklable (reloads from its path), so worker processes can use it.

    ``hint`` ends both errors (model missing, not a model): the fix, in the words of the command that asks.
    """

    def __init__(self, model: str | os.PathLike, hint: str = SPM_HINT) -> None:
        self.path = Path(model)
        self.hint = hint
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            raise UserError(f"{self.path}: SentencePiece model not found; {self.hint}")
        try:
            self.sp = _sentencepiece().SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as exc:
            raise UserError(f"{self.path}: not a SentencePiece model ({exc}); {self.hint}") from None

    def __getstate__(self) -> dict:
        return {"path": self.path, "hint": self.hint}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.hint = state.get("hint", SPM_HINT)
        self._load()

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def encode_ids(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[str]]:
        return self.sp.encode(list(texts), out_type=str)

    def decode(self, tokens: str | Sequence[str] | Sequence[int]) -> str:
        """Pieces (a list, or one space-joined string) or SentencePiece ids -> text.

        fairseq specials and ``__xxx_Yyyy__`` language tokens are dropped: they are not SentencePiece pieces.
        """
        if isinstance(tokens, str):
            tokens = tokens.split()
        tokens = list(tokens)
        if tokens and not isinstance(tokens[0], str):
            n = self.sp.get_piece_size()  # ids past the SentencePiece vocab are dict.txt language tokens
            return self.sp.decode([int(t) for t in tokens if 0 <= int(t) < n])
        keep = [t for t in tokens if t not in (BOS, PAD, EOS) and not token_lang(t)]
        return self.sp.decode_pieces(keep)


# --------------------------------------------------------------------------------------------------
# temperature sampling (pure functions)
# --------------------------------------------------------------------------------------------------
def temperature_probs(counts: Mapping[str, int], temperature: float) -> dict[str, float]:
    """p_i = n_i^(1/T) / sum_j n_j^(1/T). T=1: proportional to data; T→∞: uniform over languages."""
    if temperature <= 0:
        raise UserError(f"--sampling-temperature must be > 0, got {temperature}")
    langs = [lang for lang, n in counts.items() if n > 0]
    if not langs:
        return {}
    n = np.array([counts[lang] for lang in langs], dtype=np.float64)
    w = np.exp(np.log(n) / temperature)  # n^(1/T) without overflow
    p = w / w.sum()
    return dict(zip(langs, p.tolist()))


def sample_sizes(counts: Mapping[str, int], temperature: float, total: int, cap: int | None = None) -> dict[str, int]:
    """Sentences to draw per language: round(p_i * total), at least 1, at most ``cap``.

    More than n_i means repeating the language's sentences (upsampling), as temperature sampling intends.
    """
    probs = temperature_probs(counts, temperature)
    out = {}
    for lang, p in probs.items():
        k = max(1, int(round(p * total)))
        out[lang] = min(k, cap) if cap else k
    return out


def _draw(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices into range(n): whole passes when k > n (upsampling), then a random subset; sorted per pass."""
    reps, rest = divmod(k, n)
    parts = [np.arange(n)] * reps
    if rest:
        parts.append(np.sort(rng.choice(n, size=rest, replace=False)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
@dataclass
class SpmTrainConfig:
    """``mt-spm train``; each field with ``arg`` is also its flag."""

    # corpus dir in FLORES layout: both sides of train/{src}-{tgt}.{lang}
    corpus: str | None = arg(None, "corpus dir (FLORES layout); reads both sides of train/{src}-{tgt}.{lang}")
    # extra plain-text files (language from a .xxx_Yyyy suffix)
    inputs: list[str] = arg(
        [], "plain text files, one sentence per line", name="--input", nargs="+", metavar="FILE", type=str
    )
    # extra languages to reserve __xxx_Yyyy__ tokens for
    langs: list[str] = arg([], "extra language tokens for dict.txt", nargs="+", metavar="CODE", type=str)
    vocab_size: int = arg(8000, required=True, show_default=False)
    out: str = arg("spm", "output folder", required=True, show_default=False)
    sampling_temperature: float = arg(5.0, "T in p_i ∝ n_i^(1/T) (default 5, NLLB)", show_default=False)
    sentences_per_lang_cap: int | None = arg(None, "at most this many sampled sentences per language")
    # total sentences to sample (default: the unique sentences, at most 2M)
    sample_size: int | None = arg(None, "total sampled sentences (default: #distinct sentences, max 2M)")
    model_type: str = arg("unigram", choices=["unigram", "bpe"], show_default=False)
    character_coverage: float = arg(0.99995, show_default=False)
    seed: int = arg(1, show_default=False)
    # 0: all cores
    num_threads: int = arg(
        0, "SentencePiece threads (default: all cores)", name="--threads", aliases=("--num-threads",)
    )


@dataclass
class SpmResult:
    out: Path
    skipped: bool
    table: list[dict] = field(default_factory=list)  # per language: lang, sentences, prob, sampled
    vocab_size: int = 0


def discover_inputs(cfg: SpmTrainConfig) -> dict[str, list[Path]]:
    """Language (or input-file group) -> files. Corpus: both sides of every ``train/{src}-{tgt}.{lang}``."""
    groups: dict[str, list[Path]] = {}
    if cfg.corpus:
        train = Path(cfg.corpus) / "train"
        if not train.is_dir():
            raise UserError(
                f"{train}: no train/ folder in --corpus {cfg.corpus} (expected train/{{src}}-{{tgt}}.{{lang}})"
            )
        for p in sorted(train.iterdir()):
            m = _TRAIN_RE.match(p.name)
            if m and p.is_file():
                groups.setdefault(m.group("lang"), []).append(p)
        if not groups:
            raise UserError(f"{train}: no files named {{src}}-{{tgt}}.{{lang}} such as eng_Latn-deu_Latn.deu_Latn")
    for f in cfg.inputs:
        p = Path(f)
        if not p.is_file():
            raise UserError(f"{p}: --input file not found")
        suffix = p.suffix.lstrip(".")
        key = suffix if is_code(suffix) else f"input:{p.name}"
        groups.setdefault(key, []).append(p)
    if not groups:
        raise UserError("nothing to train on: pass --corpus DIR and/or --input FILE ...")
    return groups


def _iter_lines(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as exc:
                    raise UserError(
                        f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line; re-encode the file as UTF-8"
                    ) from None
                if line:
                    yield line


def _unique(files: Iterable[Path]) -> Iterator[str]:
    """Each distinct non-empty line once, in first-seen order (English repeats in every pair file)."""
    seen: set[str] = set()
    for line in _iter_lines(files):
        if line not in seen:
            seen.add(line)
            yield line


def _fingerprint(cfg: SpmTrainConfig, groups: Mapping[str, list[Path]]) -> str:
    files = {k: [(str(p.resolve()), file_identity(p)) for p in v] for k, v in groups.items()}  # by content
    spec = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("out", "num_threads")},
        "files": files,
        "sentencepiece": _sentencepiece().__version__,
        "format": 1,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _up_to_date(out: Path, fingerprint: str) -> dict | None:
    cfg_path = out / "spm.config.json"
    if not all((out / name).is_file() for name in OUTPUTS):
        return None
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: train again
        return None
    return saved if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint else None


def train(cfg: SpmTrainConfig, progress: bool = True) -> SpmResult:
    """Sample, train SentencePiece, write spm.model/spm.vocab/dict.txt/spm.config.json (skips if up to date)."""
    out = Path(cfg.out)
    for code in cfg.langs:
        check_code(code, "--langs")
    if cfg.model_type not in ("unigram", "bpe"):
        raise UserError(f"--model-type {cfg.model_type!r}: use unigram or bpe")
    groups = discover_inputs(cfg)
    refuse_file_in_the_way(out, "--out", folder=True)
    for f in cfg.inputs:  # `--input spm/dict.txt --out spm` would replace that input with the new dict.txt
        for name in OUTPUTS:
            refuse_overwriting_input({"--input": f}, out / name, "--out")
    fp = _fingerprint(cfg, groups)
    saved = _up_to_date(out, fp)
    if saved:
        print(
            f"{out}: spm.model, spm.vocab, dict.txt are up to date (same data and options), skipping", file=sys.stderr
        )
        return SpmResult(out, True, saved.get("languages", []), saved.get("vocab_size", 0))

    # pass 1: distinct sentences per language
    counts = {}
    for key, files in tqdm(groups.items(), desc="count sentences", disable=not progress, file=sys.stderr, leave=False):
        counts[key] = sum(1 for _ in _unique(files))
    total_unique = sum(counts.values())
    if total_unique == 0:
        raise UserError("the training files hold no non-empty lines")
    total = cfg.sample_size or min(total_unique, 2_000_000)
    sizes = sample_sizes(counts, cfg.sampling_temperature, total, cfg.sentences_per_lang_cap)
    probs = temperature_probs(counts, cfg.sampling_temperature)

    # pass 2: the sample, written to a temp file SentencePiece reads (and we encode again for counts)
    new_dirs = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, ".spm-train.")  # a killed run's work folder (its sample is as big as the text)
    work = out / temp_name("spm-train")
    sample_path, tmp_prefix = work / "sample.txt", work / "spm"
    rng = np.random.default_rng(cfg.seed)
    table = []
    finished = False
    try:
        work.mkdir()
        with open(sample_path, "w", encoding="utf-8") as fh:
            for key in tqdm(sorted(sizes), desc="sample", disable=not progress, file=sys.stderr, leave=False):
                n, k = counts[key], sizes[key]
                idx = _draw(n, k, rng)
                lines = list(_unique(groups[key]))
                for i in idx:
                    fh.write(lines[i] + "\n")
                table.append({"lang": key, "sentences": n, "prob": probs[key], "sampled": int(k)})
        _print_table(table)
        _run_trainer(cfg, sample_path, tmp_prefix)
        sp = _sentencepiece().SentencePieceProcessor(model_file=f"{tmp_prefix}.model")
        piece_counts = _count_pieces(sp, sample_path)
        langs = sorted({k for k in counts if is_code(k)} | set(cfg.langs))
        sampled = {row["lang"]: row["sampled"] for row in table}
        dict_lines = _dict_lines(sp, piece_counts, langs, sampled)
        with atomic_write(out / "dict.txt") as fh:
            fh.writelines(dict_lines)
        os.replace(f"{tmp_prefix}.vocab", out / "spm.vocab")
        os.replace(f"{tmp_prefix}.model", out / "spm.model")
        meta = {
            "fingerprint": fp,
            "config": asdict(cfg),
            "languages": table,
            "lang_tokens": langs,
            "vocab_size": sp.get_piece_size(),
            "dict_size": 4 + len(dict_lines),
        }
        with atomic_write(out / "spm.config.json") as fh:
            json.dump(meta, fh, indent=1)
        finished = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for d in [] if finished else new_dirs:  # a failed run leaves no empty --out folder behind
            with contextlib.suppress(OSError):
                d.rmdir()
    print(
        f"wrote {out}/spm.model ({sp.get_piece_size()} pieces), spm.vocab, dict.txt "
        f"({4 + len(dict_lines)} entries with {len(langs)} language tokens)",
        file=sys.stderr,
    )
    return SpmResult(out, False, table, sp.get_piece_size())


def _print_table(table: list[dict]) -> None:
    print(f"{'language':<24} {'sentences':>10} {'p (T-sampled)':>14} {'sampled':>9}", file=sys.stderr)
    for row in table:
        print(f"{row['lang']:<24} {row['sentences']:>10,} {row['prob']:>14.4f} {row['sampled']:>9,}", file=sys.stderr)


def _run_trainer(cfg: SpmTrainConfig, sample_path: Path, prefix: Path) -> None:
    spm = _sentencepiece()
    try:
        spm.SentencePieceTrainer.train(
            input=str(sample_path),
            model_prefix=str(prefix),
            vocab_size=cfg.vocab_size,
            model_type=cfg.model_type,
            character_coverage=cfg.character_coverage,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            bos_id=0,
            pad_id=1,
            eos_id=2,
            unk_id=3,  # fairseq's order, so dictionary index == SentencePiece id
            bos_piece=BOS,
            pad_piece=PAD,
            eos_piece=EOS,
            unk_piece=UNK,
            num_threads=cfg.num_threads or os.cpu_count() or 1,
            max_sentence_length=16384,
            minloglevel=2,
        )
    except RuntimeError as exc:
        msg = str(exc)
        if "Vocabulary size" in msg:
            raise UserError(
                f"--vocab-size {cfg.vocab_size} does not fit this data ({msg.strip()}); "
                "choose a smaller --vocab-size or add training text"
            ) from None
        raise UserError(f"sentencepiece training failed: {msg.strip()}") from None


def _count_pieces(sp, sample_path: Path, batch: int = 10_000) -> np.ndarray:
    """How often each piece occurs when the sample is encoded: the counts written to dict.txt."""
    counts = np.zeros(sp.get_piece_size(), dtype=np.int64)

    def add(lines: list[str]) -> None:
        ids = [i for seq in sp.encode(lines) for i in seq]
        counts[:] += np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(counts))

    with open(sample_path, encoding="utf-8") as fh:
        for lines in chunks((line.rstrip("\n") for line in fh), batch):
            add(lines)
    return counts


def _dict_lines(sp, piece_counts: np.ndarray, langs: list[str], sampled: Mapping[str, int]) -> list[str]:
    """fairseq dict.txt body: pieces in SentencePiece id order (specials omitted), then language tokens."""
    specials = {BOS, PAD, EOS, UNK}
    lines = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if i < 4:
            if piece not in specials:
                raise RuntimeError(f"SentencePiece id {i} is {piece!r}, expected a fairseq special")
            continue
        if " " in piece or "\n" in piece:
            raise RuntimeError(f"piece {piece!r} cannot be written to dict.txt")
        lines.append(f"{piece} {int(piece_counts[i])}\n")
    for code in langs:
        lines.append(f"{lang_token(code)} {max(1, int(sampled.get(code, 0)))}\n")
    return lines


# --------------------------------------------------------------------------------------------------
# encode / decode streams (mt-spm encode, mt-spm decode)
# --------------------------------------------------------------------------------------------------
@dataclass
class SpmEncodeConfig:
    model: str = arg("", "spm.model", required=True)
    output_format: str = arg("piece", choices=["piece", "id"], show_default=False)


@dataclass
class SpmDecodeConfig:
    model: str = arg("", "spm.model", required=True)
    input_format: str = arg("piece", choices=["piece", "id"], show_default=False)


def _stream_lines(stream) -> Iterator[tuple[int, str]]:
    for lineno, raw in enumerate(stream.buffer if hasattr(stream, "buffer") else stream, 1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"<stdin>:{lineno}: invalid UTF-8 at byte {exc.start} of the line") from None
        yield lineno, raw.rstrip("\r\n")


def encode_stream(cfg: SpmEncodeConfig, stdin, out) -> None:
    """Text lines -> space-separated pieces or ids, one line each."""
    tok = SpmTokenizer(cfg.model)
    for _, line in _stream_lines(stdin):
        toks = tok.encode_ids(line) if cfg.output_format == "id" else tok.encode(line)
        out.write(" ".join(map(str, toks)) + "\n")
    out.flush()


def decode_stream(cfg: SpmDecodeConfig, stdin, out) -> None:
    """Space-separated pieces or ids -> text lines."""
    tok = SpmTokenizer(cfg.model)
    for lineno, line in _stream_lines(stdin):
        parts = line.split()
        if cfg.input_format == "id":
            try:
                ids = [int(x) for x in parts]
            except ValueError:
                raise UserError(
                    f"<stdin>:{lineno}: expected space-separated integer ids (use --input-format piece for pieces)"
                ) from None
            out.write(tok.decode(ids) + "\n")
        else:
            out.write(tok.decode(parts) + "\n")
    out.flush()
