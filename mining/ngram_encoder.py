"""A cheap, weight-free baseline encoder: hashed character n-grams, L2-normalised.

Why: it needs no model, runs anywhere in seconds, and already aligns sentences that share surface
strings across languages (numbers, names, URLs, cognates). It is the floor a real multilingual encoder
(LASER, e5, USE) must beat on the BUCC-style benchmark, and the encoder the mining tests use. Spec:
``ngram`` or ``ngram:DIM`` (default 1024). Same interface as ``mining.encoders``:
``encode(sentences, lang) -> float32 [n, dim]``, rows L2-normalised (all-zero for an empty sentence).
"""

from __future__ import annotations

import zlib

import numpy as np

from mt.errors import UserError


class NgramEncoder:
    def __init__(self, dim: int = 1024, orders: tuple[int, ...] = (2, 3, 4)):
        if dim < 16:
            raise UserError(f"ngram encoder: dim {dim} is too small (use 256 or more)")
        self.dim = int(dim)
        self.orders = tuple(orders)

    @classmethod
    def from_spec(cls, spec: str) -> "NgramEncoder":
        _, _, arg = spec.partition(":")
        try:
            return cls(dim=int(arg)) if arg else cls()
        except ValueError:
            raise UserError(f"encoder spec {spec!r}: expected ngram or ngram:DIM (e.g. ngram:1024)") from None

    def encode(self, sentences: list[str], lang: str | None = None) -> np.ndarray:
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        dim = self.dim
        for r, sent in enumerate(sentences):
            words = sent.lower().split()
            if not words:
                continue
            text = f" {' '.join(words)} "
            row = out[r]
            for n in self.orders:
                for i in range(len(text) - n + 1):
                    h = zlib.crc32(text[i : i + n].encode("utf-8"))
                    row[h % dim] += 1.0 if (h >> 31) & 1 else -1.0  # signed hashing: collisions cancel out
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
