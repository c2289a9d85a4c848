"""Tiny binarized multilingual corpora for the trainer tests, built the way mt-preprocess would.

A toy "translation" task a 2-layer model learns in seconds: each language is a word-for-word cipher of a
small English vocabulary (deu reverses word order too). Text is tokenised by a SentencePiece model trained
here, pieces become ids through a fairseq ``Dictionary`` with ``__xxx_Yyyy__`` tokens, and sentences are
written with ``IndexedDatasetWriter`` ending in ``</s>``, without language tokens. Each pair is stored only
under its sorted name (``eng_Latn-fra_Latn``), so the reverse direction exercises the reverse-name lookup.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from mt.common.langs import lang_token
from mt.data.dictionary import Dictionary
from mt.data.indexed import IndexedDatasetWriter
from mt.data.layout import bin_prefix

WORDS = (
    "the cat dog sees big small red house tree runs walks and a green bird sings under over river "
    "blue stone old young man woman child eats drinks water bread"
).split()


def _cipher(lang: str, seed: int) -> dict[str, str]:
    rng = random.Random(f"{lang}-{seed}")
    letters = "bcdfghklmnprstvz"
    vowels = "aeiou"
    out = {}
    for w in WORDS:
        out[w] = "".join(rng.choice(letters) + rng.choice(vowels) for _ in range(1 + len(w) // 3))
    return out


def sentence(lang: str, eng_words: list[str], seed: int = 0) -> str:
    if lang == "eng_Latn":
        return " ".join(eng_words)
    c = _cipher(lang, seed)
    words = [c[w] for w in eng_words]
    if lang == "deu_Latn":
        words = words[::-1]
    return " ".join(words)


def make_corpus(
    root: Path,
    pairs: tuple[tuple[str, str], ...] = (("eng_Latn", "deu_Latn"),),
    sizes: dict[str, int] | None = None,
    n_valid: int = 16,
    min_len: int = 2,
    max_len: int = 6,
    seed: int = 0,
    vocab_size: int = 120,
) -> Path:
    """Write ``root/bin`` (dict.txt, spm.model, train/valid .bin/.idx) and return it."""
    sizes = sizes or {}
    rng = random.Random(seed)
    data = root / "bin"
    data.mkdir(parents=True, exist_ok=True)
    langs = sorted({lang for p in pairs for lang in p})
    texts: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for a, b in pairs:
        a, b = sorted((a, b))
        n = sizes.get(f"{a}-{b}", 200)
        for split, count in (("train", n), ("valid", n_valid)):
            rows = []
            for _ in range(count):
                ws = [rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))]
                rows.append((sentence(a, ws, seed), sentence(b, ws, seed)))
            texts[(split, a, b)] = rows
    all_text = [s for rows in texts.values() for pair in rows for s in pair]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(all_text),
        model_prefix=str(data / "spm"),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(data / "spm.model"))
    d = Dictionary()
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if piece != "<unk>":
            d.add_symbol(piece, 1)
    for lang in langs:
        d.add_symbol(lang_token(lang), 1)
    d.save(data / "dict.txt")
    d = Dictionary.load(data / "dict.txt")
    for (split, a, b), rows in texts.items():
        for side, lang in ((0, a), (1, b)):
            with IndexedDatasetWriter(bin_prefix(data, split, a, b, lang)) as w:
                for row in rows:
                    w.add(d.encode_pieces(sp.encode(row[side], out_type=str)))
    return data


def directions(pairs: tuple[tuple[str, str], ...]) -> list[str]:
    out = []
    for a, b in pairs:
        out += [f"{a}-{b}", f"{b}-{a}"]
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine is shared: OpenMP threads fighting over 2 cores make tiny models ~20x slower,
    and one thread also keeps float results independent of the machine's core count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def wait_for_update(log: Path, proc: subprocess.Popen, update: int, timeout: float = 120) -> int:
    """Poll the JSON-lines log until a train record with update >= ``update`` appears."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"mt-train exited early: {proc.stderr.read()}")
        if log.is_file():
            done = log.read_text().rpartition("\n")[0]  # whole lines only: the writer may be mid-record
            ups = [json.loads(line)["update"] for line in done.splitlines() if '"train"' in line]
            if ups and max(ups) >= update:
                return max(ups)
        time.sleep(0.005)
    raise AssertionError("timeout waiting for training progress")


def tiny_train_args(data: Path, save_dir: Path, *extra: str) -> list[str]:
    """mt-train's command line for the loop tests: three directions, transformer_tiny, a fixed seed."""
    return [
        str(data),
        "--lang-pairs",
        "eng_Latn-deu_Latn,deu_Latn-eng_Latn,eng_Latn-fra_Latn",
        "--arch",
        "transformer_tiny",
        "--save-dir",
        str(save_dir),
        "--max-tokens",
        "160",
        "--lr",
        "3e-3",
        "--warmup-updates",
        "5",
        "--log-interval",
        "1",
        "--no-progress-bar",
        "--seed",
        "7",
        *extra,
    ]


def subprocess_env() -> dict[str, str]:
    """The environment of an mt-train subprocess: one thread, unbuffered output, never part of a torchrun job."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env
