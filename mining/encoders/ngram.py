"""A cheap, weight-free baseline encoder: hashed character n-grams (spec ``ngram`` or ``ngram:DIM``).

Why: it needs no model, runs anywhere in seconds, and already aligns sentences that share surface
strings across languages (numbers, names, URLs, cognates). It is the floor a real multilingual encoder
(LASER, e5, USE) must beat on the BUCC-style benchmark, and the encoder the mining tests use.
Rows are L2-normalised (all-zero for an empty sentence), like every ``Encoder``.
"""

from __future__ import annotations

import zlib

import numpy as np

from mining.encoders.base import Encoder
from mt.common.errors import UserError

DEFAULT_DIM = 1024


class NgramEncoder(Encoder):
    batch_size = 1024

    def __init__(self, dim: int = DEFAULT_DIM, orders: tuple[int, ...] = (2, 3, 4)):
        if dim < 16:
            raise UserError(f"ngram encoder: dim {dim} is too small (use 256 or more)")
        self.dim = int(dim)
        self.orders = tuple(orders)
        self.name = "ngram" if self.dim == DEFAULT_DIM else f"ngram:{self.dim}"

    @classmethod
    def from_spec(cls, spec: str) -> "NgramEncoder":
        """``ngram`` or ``ngram:DIM``."""
        _, _, arg = spec.partition(":")
        try:
            return cls(dim=int(arg)) if arg else cls()
        except ValueError:
            raise UserError(f"encoder spec {spec!r}: expected ngram or ngram:DIM (e.g. ngram:1024)") from None

    def _encode_batch(self, sentences: list[str], lang: str) -> np.ndarray:
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
        return out
