"""Pre-LayerNorm Transformer encoder-decoder (NLLB dense / M2M-100 shape) with incremental decoding.

Decisions:
- Pre-LN layers with a final LayerNorm on each stack; ReLU FFN; sinusoidal positions exactly as fairseq
  (positions start at ``padding_idx + 1``, half sin / half cos); embeddings scaled by sqrt(d).
- One embedding matrix shared by encoder input, decoder input and the output projection (joined
  dictionary, ``--share-all-embeddings`` in fairseq), so the model has no separate output matrix.
- Right padding everywhere (see ``mt.data.pair_dataset``): positions are simply ``arange`` for every
  sentence, the decoder's causal mask alone hides target padding (pads only follow real tokens), and a
  batch without padding runs SDPA without any mask.
- Attention is ``F.scaled_dot_product_attention`` with one fused QKV projection for self-attention and a
  fused KV projection for encoder-decoder attention (one GEMM instead of three / two). One measured
  exception: on CPU in bfloat16, PyTorch's SDPA kernels (flash and math) are 3-10x slower than two
  batched GEMMs with an fp32 softmax for MT-length sequences (torch 2.13, 2-core AVX-512 box, fwd+bwd of
  B=100, S=20 / B=16, S=128: 40-86 ms vs 4-27 ms), so ``attention()`` takes that path there; and on CPU
  with attention dropout too, whose mask then comes from ``mt.models.dropout`` (SDPA would draw it from
  torch's default generator, which ``mt-train --cpu-workers`` keeps out of the model: ``mt.models.rng``).
- ``forward(..., target_mask=...)`` keeps only the positions the loss needs (non-padding targets): the
  V-sized projection and its softmax are the largest single cost of a small MT model, and padded
  positions would be pure waste. With ``features_only=True`` it returns those decoder states instead of
  logits, and the criterion fuses the projection with the loss (``mt.train.criterion``).
- Incremental decoding from the start: ``decode(prev_tokens, enc, cache=DecoderCache())`` takes the
  whole prefix (fairseq's convention) and runs only the positions not yet in the cache; self-attention
  keys/values are appended per step, encoder-decoder keys/values are computed once. ``cache.reorder``
  serves beam search.
- Sub-layers that later versions swap in are built by ``build_ffn`` / ``build_adapter`` and receive the
  ``ForwardContext``; parameter names follow fairseq (``self_attn_layer_norm``, ``encoder_attn``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mt.models.adapters import build_adapter
from mt.models.config import ForwardContext, TransformerConfig
from mt.models.dropout import dropout, dropout_add
from mt.models.ffn import FeedForward
from mt.models.moe import build_moe_ffn, is_moe_layer


def build_ffn(cfg: TransformerConfig, layer_idx: int, is_decoder: bool) -> nn.Module:
    """The FFN for layer ``layer_idx`` (0-based) of the decoder or encoder stack (sparse MoE every
    ``--moe-freq``-th layer, see ``mt.models.moe``; the contract is in ``mt.models.ffn``)."""
    if is_moe_layer(cfg, layer_idx):
        return build_moe_ffn(cfg, layer_idx, is_decoder)
    if is_decoder:
        return FeedForward(cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim, cfg.activation_dropout)
    return FeedForward(cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.activation_dropout)


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int) -> torch.Tensor:
    """fairseq's SinusoidalPositionalEmbedding weights: row ``padding_idx`` is zero."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(num_positions, dtype=torch.float)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[padding_idx] = 0
    return table


class SinusoidalPositions(nn.Module):
    def __init__(self, dim: int, padding_idx: int, max_positions: int) -> None:
        super().__init__()
        self.dim, self.padding_idx = dim, padding_idx
        self.register_buffer(
            "table", sinusoidal_table(max_positions + padding_idx + 1, dim, padding_idx), persistent=False
        )

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        start = self.padding_idx + 1 + offset
        if start + length > self.table.size(0):  # longer than configured (decoding): grow, as fairseq does
            self.table = sinusoidal_table(start + length, self.dim, self.padding_idx).to(self.table)
        return self.table[start : start + length]


@dataclass
class EncoderOut:
    out: torch.Tensor  # (B, S, d) after the encoder's final LayerNorm
    pad_mask: torch.Tensor  # (B, S) True at padding
    attn_mask: torch.Tensor | None  # (B, 1, 1, S) True = attend; None when the batch has no padding

    def reorder(self, new_order: torch.Tensor) -> "EncoderOut":
        m = None if self.attn_mask is None else self.attn_mask.index_select(0, new_order)
        return EncoderOut(self.out.index_select(0, new_order), self.pad_mask.index_select(0, new_order), m)


@dataclass
class DecoderCache:
    """Cached keys/values of every decoder layer: ``layers[i] = {"self": {...}, "cross": {...}}``."""

    length: int = 0
    layers: dict[int, dict[str, dict[str, torch.Tensor]]] = field(default_factory=dict)

    def layer(self, idx: int) -> dict[str, dict[str, torch.Tensor]]:
        return self.layers.setdefault(idx, {"self": {}, "cross": {}})

    def reorder(self, new_order: torch.Tensor) -> None:
        """Select / repeat batch rows (beam search): every cached tensor is batch-first."""
        for lay in self.layers.values():
            for kv in lay.values():
                for k in list(kv):
                    kv[k] = kv[k].index_select(0, new_order)


def _bmm_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool, dropout_p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with batched GEMMs and an fp32 softmax (see module docstring)."""
    B, H, T, D = q.shape
    S = k.size(2)
    bias = None
    if attn_mask is not None:  # bool, True = attend, broadcastable to (B, H, T, S)
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~attn_mask, float("-inf"))
    if is_causal:
        causal = torch.full((T, S), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        bias = causal if bias is None else bias + causal
    qf, kf = q.reshape(B * H, T, D), k.reshape(B * H, S, D)
    if bias is None:
        scores = torch.bmm(qf, kf.transpose(1, 2)).mul_(D**-0.5)
    else:
        scores = torch.baddbmm(bias.expand(B, H, T, S).reshape(B * H, T, S), qf, kf.transpose(1, 2), alpha=D**-0.5)
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    if dropout_p > 0:
        probs = dropout(probs, dropout_p, True)
    return torch.bmm(probs, v.reshape(B * H, S, D)).view(B, H, T, D)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool, dropout_p: float
) -> torch.Tensor:
    """(B, H, T, D) attention: SDPA, except for low-precision or dropout on CPU (see module docstring)."""
    if q.device.type == "cpu" and (q.dtype in (torch.bfloat16, torch.float16) or dropout_p > 0):
        return _bmm_attention(q, k, v, attn_mask, is_causal, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)


class Attention(nn.Module):
    """Multi-head attention via SDPA; fused QKV (self) or fused KV (encoder-decoder)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.cross = dropout, cross
        if cross:
            self.q_proj = nn.Linear(embed_dim, embed_dim)
            self.kv_proj = nn.Linear(embed_dim, 2 * embed_dim)
        else:
            self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _heads(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        """(B, T, n*d) -> n tensors (B, H, T, head_dim), as views (no copy)."""
        B, T, _ = x.shape
        return x.view(B, T, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        if self.cross:
            (q,) = self._heads(self.q_proj(x), 1)
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = self._heads(self.kv_proj(memory), 2)
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        else:
            q, k, v = self._heads(self.qkv_proj(x), 3)
            if cache is not None:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        o = attention(q, k, v, attn_mask, is_causal, self.dropout if self.training else 0.0)
        return self.out_proj(o.transpose(1, 2).reshape(B, T, self.embed_dim))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer_idx: int) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_idx, self.dropout = layer_idx, cfg.dropout
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.encoder_attention_heads, cfg.attention_dropout, cross=False)
        self.final_layer_norm = nn.LayerNorm(d)
        self.ffn = build_ffn(cfg, layer_idx, is_decoder=False)
        self.adapter = build_adapter(cfg, layer_idx, is_decoder=False)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, ctx: ForwardContext) -> torch.Tensor:
        h = self.self_attn(self.self_attn_layer_norm(x), attn_mask=attn_mask)
        x = dropout_add(x, h, self.dropout, self.training)
        h = self.ffn(self.final_layer_norm(x), ctx)
        x = dropout_add(x, h, self.dropout, self.training)
        if self.adapter is not None:
            x = self.adapter(x, ctx)
        return x


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer_idx: int) -> None:
        super().__init__()
        d = cfg.decoder_embed_dim
        self.layer_idx, self.dropout = layer_idx, cfg.dropout
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.decoder_attention_heads, cfg.attention_dropout, cross=False)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, cfg.decoder_attention_heads, cfg.attention_dropout, cross=True)
        self.final_layer_norm = nn.LayerNorm(d)
        self.ffn = build_ffn(cfg, layer_idx, is_decoder=True)
        self.adapter = build_adapter(cfg, layer_idx, is_decoder=True)

    def forward(
        self,
        x: torch.Tensor,
        enc: EncoderOut,
        self_mask: torch.Tensor | None,
        is_causal: bool,
        ctx: ForwardContext,
        cache: DecoderCache | None = None,
    ) -> torch.Tensor:
        lay = cache.layer(self.layer_idx) if cache is not None else None
        h = self.self_attn(
            self.self_attn_layer_norm(x),
            attn_mask=self_mask,
            is_causal=is_causal,
            cache=lay["self"] if lay is not None else None,
        )
        x = dropout_add(x, h, self.dropout, self.training)
        h = self.encoder_attn(
            self.encoder_attn_layer_norm(x),
            memory=enc.out,
            attn_mask=enc.attn_mask,
            cache=lay["cross"] if lay is not None else None,
        )
        x = dropout_add(x, h, self.dropout, self.training)
        h = self.ffn(self.final_layer_norm(x), ctx)
        x = dropout_add(x, h, self.dropout, self.training)
        if self.adapter is not None:
            x = self.adapter(x, ctx)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, ctx: ForwardContext) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_mask, ctx)
        return self.layer_norm(x)


class Decoder(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.decoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.decoder_embed_dim)

    def forward(self, x, enc, self_mask, is_causal, ctx, cache=None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, enc, self_mask, is_causal, ctx, cache)
        return self.layer_norm(x)


class Transformer(nn.Module):
    """Encoder-decoder with shared embeddings. ``forward`` for training, ``encode``/``decode`` for search."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        d = cfg.encoder_embed_dim
        self.padding_idx = cfg.padding_idx
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=d**-0.5)
        with torch.no_grad():
            self.embed_tokens.weight[cfg.padding_idx].zero_()
        self.embed_scale = math.sqrt(d)
        max_pos = max(cfg.max_source_positions, cfg.max_target_positions)
        self.embed_positions = SinusoidalPositions(d, cfg.padding_idx, max_pos)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def _embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        pos = self.embed_positions(tokens.size(1), offset)
        # in the positions' float32: a bf16 embedding table (inference, see mt.generate.loading) is scaled exactly
        x = self.embed_scale * self.embed_tokens(tokens).to(pos.dtype) + pos
        return dropout(x, self.cfg.dropout, self.training)

    @property
    def output_weight(self) -> torch.Tensor:
        """(V, d) output projection: the shared embedding matrix."""
        return self.embed_tokens.weight

    def output_layer(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.embed_tokens.weight)

    def encode(self, src_tokens: torch.Tensor, ctx: ForwardContext | None = None) -> EncoderOut:
        """Run the encoder on right-padded ``__src__ x1 .. xn </s>`` rows."""
        ctx = ctx if ctx is not None else ForwardContext()
        pad = src_tokens.eq(self.padding_idx)
        if ctx.src_pad_mask is None:
            ctx.src_pad_mask = pad
        attn_mask = ~pad[:, None, None, :] if bool(pad.any()) else None
        out = self.encoder(self._embed(src_tokens), attn_mask, ctx)
        return EncoderOut(out, pad, attn_mask)

    def decoder_hidden(
        self,
        prev_tokens: torch.Tensor,
        enc: EncoderOut,
        ctx: ForwardContext | None = None,
        cache: DecoderCache | None = None,
    ) -> torch.Tensor:
        """Decoder states after the final LayerNorm; with ``cache`` only for positions not yet cached."""
        ctx = ctx if ctx is not None else ForwardContext()
        start = cache.length if cache is not None else 0
        new = prev_tokens[:, start:] if start else prev_tokens
        n = new.size(1)
        self_mask, is_causal = None, False
        if cache is None or start == 0:
            is_causal = n > 1  # SDPA's causal mask is top-left aligned: right for an empty cache
        elif n > 1:  # several new positions after a non-empty cache: bottom-right aligned causal mask
            self_mask = torch.ones(n, start + n, dtype=torch.bool, device=new.device).tril(diagonal=start)
        ctx.incremental = cache is not None
        if ctx.tgt_pad_mask is None or cache is not None:
            ctx.tgt_pad_mask = new.eq(self.padding_idx)
        h = self.decoder(self._embed(new, offset=start), enc, self_mask, is_causal, ctx, cache)
        if cache is not None:
            cache.length = start + n
        return h

    def decode(
        self,
        prev_tokens: torch.Tensor,
        enc: EncoderOut,
        cache: DecoderCache | None = None,
        ctx: ForwardContext | None = None,
    ) -> torch.Tensor:
        """Logits (B, T_new, V) for ``__tgt__ y1 .. yk`` prefixes; see ``decoder_hidden`` for the cache."""
        return self.output_layer(self.decoder_hidden(prev_tokens, enc, ctx, cache))

    def forward(
        self,
        src_tokens: torch.Tensor,
        prev_output_tokens: torch.Tensor,
        ctx: ForwardContext | None = None,
        target_mask: torch.Tensor | None = None,
        features_only: bool = False,
    ) -> torch.Tensor:
        """Training forward: logits (B, T, V), or (N, V) at the N positions where ``target_mask`` is True.

        ``features_only``: the decoder states (B, T, d) / (N, d) instead of logits (for the fused loss).
        """
        ctx = ctx if ctx is not None else ForwardContext()
        enc = self.encode(src_tokens, ctx)
        h = self.decoder_hidden(prev_output_tokens, enc, ctx)
        if target_mask is not None:
            h = h[target_mask]
        return h if features_only else self.output_layer(h)


def build_model(cfg: TransformerConfig) -> Transformer:
    return Transformer(cfg)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
