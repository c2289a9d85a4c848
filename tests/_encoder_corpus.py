"""A tiny parallel corpus in the FLORES layout for the encoder-training tests.

Every language is a word-for-word cipher of a small English vocabulary (``train_fixtures._cipher``;
deu_Latn also reverses word order) that leaves a few "names" as they are, so translations really are
translations and a tiny model can learn them in seconds. Languages share English rows (joins through
English work); dev/ and devtest/ are N-way: line i is the same English sentence in every language.
"""

from __future__ import annotations

import random
from pathlib import Path

from train_fixtures import WORDS, _cipher

# names, numbers and the like: written the same in every language (as in real software strings)
SHARED = {"cat", "dog", "river", "stone", "bread", "house"}


def sentence(lang: str, words: list[str]) -> str:
    if lang == "eng_Latn":
        return " ".join(words)
    c = _cipher(lang, 0)
    out = [w if w in SHARED else c[w] for w in words]
    return " ".join(out[::-1] if lang == "deu_Latn" else out)


SIZES = {"deu_Latn": 300, "fra_Latn": 200, "xho_Latn": 60}


def _words(rng: random.Random) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]


def make_encoder_corpus(root: Path, sizes: dict[str, int] | None = None, n_eval: int = 30, seed: int = 0) -> Path:
    sizes = sizes or SIZES
    rng = random.Random(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    pool = [_words(rng) for _ in range(max(sizes.values()))]
    for lang, n in sizes.items():  # the first n English rows: multi-way, as the gettext corpus
        rows = pool[:n]
        for code in ("eng_Latn", lang):
            text = "".join(sentence(code, ws) + "\n" for ws in rows)
            (root / "train" / f"eng_Latn-{lang}.{code}").write_text(text, encoding="utf-8")
    for split in ("dev", "devtest"):
        (root / split).mkdir(exist_ok=True)
        seen: set[str] = set()
        rows = []
        while len(rows) < n_eval:  # distinct English lines: the xsim gold is unambiguous
            ws = _words(rng)
            if " ".join(ws) not in seen:
                seen.add(" ".join(ws))
                rows.append(ws)
        for code in ("eng_Latn", *sizes):
            text = "".join(sentence(code, ws) + "\n" for ws in rows)
            (root / split / f"{code}.{split}").write_text(text, encoding="utf-8")
    return root
