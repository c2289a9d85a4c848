"""A one-token-per-step decoder for search, faster than ``Transformer.decode`` with a ``DecoderCache``.

``Transformer.decode`` is the reference (training and any model shape); this runs the same layers with
the same weights for the case search has, one new position per row per step, and keeps what a step
costs beyond the matrix products small (measured on CPU: SDPA took 2-7x longer than batched GEMMs for
one query, and the cache copies were as large as the layer compute):

- self-attention keys/values live in one buffer per layer (rows x heads x capacity x head_dim), reserved
  for the batch's most rows and longest output and kept for the next batch (``Scratch``); a step writes
  one position, and reordering beams copies only the rows whose source changed, in place. Measured
  (transformer_base, beam 4, 200 sentences, 1 thread): fresh caches per batch, grown by doubling and
  reordered into a second buffer, spent ~20% of decoding faulting their pages in (750k minor faults,
  2.25 GB peak); now 1.33 GB, and 4.7 -> 5.7 sentences/s (int8 6.4 -> 8.3) on a first run;
- encoder-decoder keys/values are kept once per *sentence*, not per beam: the ``beam`` queries of a
  sentence attend to its source together, as a (beam x source) attention (no copies on reorder, 1/beam
  of the memory traffic);
- attention is two batched GEMMs with a float32 softmax;
- ``dtype=torch.bfloat16``: decoder weights are cast once and the matrix products run in bf16 while the
  residual stream, LayerNorms and softmaxes stay float32 (what autocast does, without its per-op cost).
- ``int8=True`` (``--quantize int8``): every decoder product, the output projection included, runs on
  int8 weights (``mt.generate.quantize``), activations and the residual stream float32.

FFN and adapter sub-layers are called as modules with a ``ForwardContext``, so MoE layers work here
unchanged (under autocast in bf16 unless they are the dense ``FeedForward``). ``supports(model)`` tells
whether a model's decoder layers are the ones this mirrors; search falls back to ``Transformer.decode``
otherwise. Tests check both give the same hypotheses.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from mt.generate.quantize import BlockedInt8Linear, Int8Linear, int8_output_projection
from mt.models import gemm_shapes
from mt.models.config import ForwardContext
from mt.models.ffn import FeedForward
from mt.models.transformer import Attention, DecoderLayer, EncoderOut, Transformer


def supports(model: torch.nn.Module) -> bool:
    """True when every decoder layer is the stock ``DecoderLayer`` with stock attention modules."""
    if not isinstance(model, Transformer):
        return False
    for layer in model.decoder.layers:
        if (
            type(layer) is not DecoderLayer
            or type(layer.self_attn) is not Attention
            or type(layer.encoder_attn) is not Attention
        ):
            return False
    return True


class Dense:
    """``F.linear`` with fixed weight and bias (the decoder's matrices in the compute dtype).

    Float32 products on the CPU run in oneDNN, wide ones (the vocabulary's) in row blocks written into a
    reused buffer (``gemm_shapes.linear``: NLLB-200-600M decoding 1.4x faster with MKL blocks, measured)."""

    __slots__ = ("weight", "bias", "wide")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias
        self.wide = bool(gemm_shapes.block_rows(weight) or gemm_shapes.onednn_block_rows(weight))

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return gemm_shapes.linear(x, self.weight, self.bias, out)


Linear = Callable[[torch.Tensor], torch.Tensor]


class Scratch:
    """Buffers reused by every batch decoded with the same ``DecoderWeights`` (one batch at a time).

    Why: the key/value caches and the logits are large tensors (a 256-row transformer_base cache is 34 MB a
    layer); made fresh per batch, glibc maps those above 32 MiB afresh each time, so every batch faulted its
    caches in again, 4 KiB at a time (~10 us a page on the project's VM). A buffer here only grows. (Raising
    glibc's mmap and trim thresholds with ``mallopt`` instead was measured too: no gain once these buffers
    are kept.)"""

    def __init__(self) -> None:
        self._flat: dict[object, torch.Tensor] = {}
        # positions per row of the key/value buffers, kept by every later batch: a batch with its own layout
        # would write other pages of the same buffers, and over a long job fault in all of them
        self.kv_cap = 0

    def take(
        self, key: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, reserve: int = 0
    ) -> torch.Tensor:
        """A contiguous ``shape`` view of the buffer named ``key``, which holds at least ``reserve`` elements
        (contents undefined when it is new: a buffer too small is replaced, not copied)."""
        n = math.prod(shape)
        buf = self._flat.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            self._flat.pop(key, None)  # free the old one first (unless the caller still holds a view)
            buf = self._flat[key] = torch.empty(max(n, reserve), dtype=dtype, device=device)
        return buf[:n].view(shape)


class DecoderWeights:
    """The decoder's matrix products, made once: bf16 copies, the float32 parameters themselves, or int8;
    and the ``Scratch`` buffers the batches decoded with them reuse.

    ``int8`` (``mt.generate.quantize``): every product, the output projection included, runs on int8
    weights with float32 activations; projections the model already holds as ``Int8Linear`` are used as
    they are (``quantize_linears_``)."""

    def __init__(self, model: Transformer, dtype: torch.dtype = torch.float32, int8: bool = False) -> None:
        self.dtype, self.int8 = dtype, int8
        self.scratch = Scratch()  # the decoder's caches, kept for the next batch
        if int8 and dtype != torch.float32:
            raise ValueError("int8 decoder weights take float32 activations")

        def lin(m: torch.nn.Module) -> Linear:
            if isinstance(m, Int8Linear):
                return m
            if int8:
                return Int8Linear.from_linear(m)
            return Dense(cast(m.weight), cast(m.bias))

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach() if t.dtype == dtype else t.detach().to(dtype)

        self.layers: list[dict[str, Linear]] = []
        for layer in model.decoder.layers:
            sa, ca = layer.self_attn, layer.encoder_attn
            w = {
                "qkv": lin(sa.qkv_proj),
                "self_out": lin(sa.out_proj),
                "q": lin(ca.q_proj),
                "kv": lin(ca.kv_proj),
                "cross_out": lin(ca.out_proj),
            }
            if type(layer.ffn) is FeedForward:
                w["fc1"], w["fc2"] = lin(layer.ffn.fc1), lin(layer.ffn.fc2)
            self.layers.append(w)
        emb = model.embed_tokens.weight
        self.embed: Linear = int8_output_projection(emb) if int8 else Dense(cast(emb), None)


class IncrementalDecoder:
    """Decoder state of one search batch: rows = live sentences x rows per sentence."""

    def __init__(
        self,
        model: Transformer,
        enc: EncoderOut,
        weights: DecoderWeights,
        max_positions: int,
        src_lang: torch.Tensor | None = None,
        tgt_lang: torch.Tensor | None = None,
        max_rows: int = 0,
    ) -> None:
        self.model, self.w, self.dtype = model, weights, weights.dtype
        cfg = model.cfg
        self.d, self.H = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        self.hd = self.d // self.H
        self.scale = self.hd**-0.5
        self.max_positions = max_positions
        self.rows_per_sent = 1
        self.t = 0  # positions cached
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        b, S, _ = enc.out.shape
        mem = enc.out.to(self.dtype)
        # encoder-decoder keys/values, once per sentence: (b * H, S, hd) each
        self.cross = []
        for w in weights.layers:
            kv = w["kv"](mem).view(b, S, 2, self.H, self.hd).permute(2, 0, 3, 1, 4)
            self.cross.append((kv[0].reshape(b * self.H, S, self.hd), kv[1].reshape(b * self.H, S, self.hd)))
        self.src_pad = enc.pad_mask
        self._set_cross_bias()
        self.kv: list[list[torch.Tensor]] = []  # per layer [K, V], (rows, H, capacity, hd)
        self.scratch = weights.scratch
        self.max_rows = max_rows or b  # the most rows a step will have (sentences x beam): reserved once
        self.cap = 0

    def _set_cross_bias(self) -> None:
        pad = self.src_pad
        if bool(pad.any()):
            b, S = pad.shape
            bias = torch.zeros(b, S, dtype=torch.float32, device=pad.device).masked_fill_(pad, float("-inf"))
            self.cross_bias = bias.repeat_interleave(self.H, dim=0).unsqueeze(1)  # (b * H, 1, S)
        else:
            self.cross_bias = None

    # --- cache management ----------------------------------------------------------------------------
    def _ensure(self, rows: int, need: int, device: torch.device) -> bool:
        """Make ``self.kv`` views (rows, H, cap, hd) of the layers' key/value buffers, one buffer each, reserved
        for ``max_rows`` x ``max_positions`` (pages never written are never faulted in). True when a buffer
        had to be reallocated for more rows (its contents are then only in the previous views)."""
        if need <= self.cap and self.kv and self.kv[0][0].size(0) == rows:
            return False
        grow = bool(self.kv) and need > self.cap  # a step outran max_positions: a new layout, copied over
        saved = [[k[:, :, : self.t].clone() for k in lay] for lay in self.kv] if grow else None
        self.cap = max(need, 2 * self.cap) if grow else max(self.cap, self.max_positions, need, self.scratch.kv_cap)
        self.scratch.kv_cap = max(self.scratch.kv_cap, self.cap)
        self.max_rows = max(self.max_rows, rows)
        shape, reserve = (rows, self.H, self.cap, self.hd), self.max_rows * self.H * self.cap * self.hd
        old = self.kv
        self.kv = [
            [self.scratch.take(("kv", i, j), shape, self.dtype, device, reserve) for j in range(2)]
            for i in range(len(self.w.layers))
        ]
        if saved is not None:
            for lay, sv in zip(self.kv, saved):
                for k, v in zip(lay, sv):
                    k[:, :, : self.t].copy_(v)
            return False
        return any(o.data_ptr() != k.data_ptr() for lo, lk in zip(old, self.kv) for o, k in zip(lo, lk))

    def select(
        self, rows: torch.Tensor, sentences: torch.Tensor | None = None, rows_per_sent: int | None = None
    ) -> None:
        """Keep / repeat rows (beam reordering, expansion at step 0, dropping finished sentences).

        ``sentences``: indices of the sentences still live, when that set changed. The caches are reordered
        in place: only rows whose source row differs are copied, through a small gathered buffer (copying
        into a second set of caches doubled the memory they take, and faulting that in cost more than the
        copies it saved).
        """
        n = rows.numel()
        if self.t:
            t, old = self.t, self.kv
            ar = torch.arange(n, device=rows.device)
            moved = ar if self._ensure(n, t, rows.device) else (rows != ar).nonzero().view(-1)
            if moved.numel():
                src = rows.index_select(0, moved)
                tmp = self.scratch.take("kv_moved", (moved.numel(), self.H, t, self.hd), self.dtype, rows.device)
                for lay, old_lay in zip(self.kv, old):
                    for cur, prev in zip(lay, old_lay):
                        torch.index_select(prev[:, :, :t], 0, src, out=tmp)
                        cur[:, :, :t].index_copy_(0, moved, tmp)
        if self.src_lang is not None:
            self.src_lang = self.src_lang.index_select(0, rows)
        if self.tgt_lang is not None:
            self.tgt_lang = self.tgt_lang.index_select(0, rows)
        if sentences is not None:
            H, idx = self.H, sentences
            heads = (idx.view(-1, 1) * H + torch.arange(H, device=idx.device)).view(-1)
            self.cross = [(k.index_select(0, heads), v.index_select(0, heads)) for k, v in self.cross]
            self.src_pad = self.src_pad.index_select(0, idx)
            self._set_cross_bias()
        if rows_per_sent is not None:
            self.rows_per_sent = rows_per_sent

    # --- one step -----------------------------------------------------------------------------------------
    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        scores = torch.bmm(q, k.transpose(1, 2))
        scores = scores.float().mul_(self.scale)
        if bias is not None:
            scores += bias
        return torch.bmm(torch.softmax(scores, dim=-1).to(v.dtype), v)

    def _ffn(self, layer, w, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if "fc1" in w and not (layer.ffn.activation_dropout > 0 and layer.ffn.training):
            return w["fc2"](F.relu(w["fc1"](h.to(self.dtype))))
        amp = torch.autocast(h.device.type, dtype=self.dtype) if self.dtype != torch.float32 else nullcontext()
        with amp:
            return layer.ffn(h.unsqueeze(1), ctx).squeeze(1)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (rows, V), float32, for the next token after ``tokens`` (rows,) at position ``self.t``."""
        model, H, hd, dt = self.model, self.H, self.hd, self.dtype
        N = tokens.numel()
        t = self.t
        self._ensure(N, t + 1, tokens.device)
        ctx = ForwardContext(
            src_lang=self.src_lang,
            tgt_lang=self.tgt_lang,
            incremental=True,
            tgt_pad_mask=torch.zeros(N, 1, dtype=torch.bool, device=tokens.device),
        )
        x = model._embed(tokens.view(N, 1), offset=t).view(N, self.d).float()  # fresh: updated in place below
        b = N // self.rows_per_sent
        k_rows = self.rows_per_sent
        for i, layer in enumerate(model.decoder.layers):
            w = self.w.layers[i]
            # self-attention: write this position's key/value, attend over positions 0..t
            qkv = w["qkv"](layer.self_attn_layer_norm(x).to(dt)).view(N, 3, H, hd)
            K, V = self.kv[i]
            K[:N, :, t].copy_(qkv[:, 1])
            V[:N, :, t].copy_(qkv[:, 2])
            o = self._attend(
                qkv[:, 0].reshape(N * H, 1, hd),
                K[:N, :, : t + 1].reshape(N * H, t + 1, hd),
                V[:N, :, : t + 1].reshape(N * H, t + 1, hd),
                None,
            )
            x.add_(w["self_out"](o.view(N, self.d)))  # bf16 output added into the fp32 stream
            # encoder-decoder attention: the k_rows beams of a sentence are its queries
            q = w["q"](layer.encoder_attn_layer_norm(x).to(dt))
            q = q.view(b, k_rows, H, hd).transpose(1, 2).reshape(b * H, k_rows, hd)
            ck, cv = self.cross[i]
            o = self._attend(q, ck, cv, self.cross_bias).view(b, H, k_rows, hd).transpose(1, 2).reshape(N, self.d)
            x.add_(w["cross_out"](o))
            x.add_(self._ffn(layer, w, layer.final_layer_norm(x), ctx))
            if layer.adapter is not None:
                amp = torch.autocast(x.device.type, dtype=dt) if dt != torch.float32 else nullcontext()
                with amp:
                    x = layer.adapter(x.unsqueeze(1), ctx).squeeze(1).float()
        self.t = t + 1
        h = model.decoder.layer_norm(x).to(dt)
        proj = self.w.embed  # blocked products write into the reused buffer; the others return a new tensor
        if isinstance(proj, BlockedInt8Linear):
            return proj(h, out=self._logits(N, proj.out_features, torch.float32))
        if isinstance(proj, Dense) and proj.wide and h.dtype == torch.float32:
            return proj(h, out=self._logits(N, proj.weight.size(0), h.dtype))
        return proj(h).float()

    def _logits(self, n: int, V: int, dtype: torch.dtype) -> torch.Tensor:
        """A (n, V) buffer for the step's logits, reused across steps and batches: a fresh vocabulary-wide tensor
        each step costs page faults (64 x 256k float32: 50 ms of a ~600 ms product on the 2-core EPYC)."""
        return self.scratch.take("logits", (n, V), dtype, self.src_pad.device)
