"""Per-layer adapters: ``build_adapter(cfg, layer_idx, is_decoder)`` -> module or None (dense baseline).

Each layer applies ``x = adapter(x, ctx)`` after its FFN block. An adapter owns its residual; all of them
here are Bapna & Firat (2019) bottlenecks ``x + W_u relu(W_d LN(x) + b_d) + b_u``. Batches mix directions,
so sentences are grouped by adapter key (one GEMM pair per key present in the batch, no per-sentence
weights are materialised).

``--lang-adapters lang``: one adapter per language and layer; encoder adapters are chosen by the source
language, decoder adapters by the target language. ``--lang-adapters pair``: one adapter per training
pair (``cfg.adapter_lang_pairs``) and layer, in both stacks. The up-projection starts at zero, so a new
adapter is the identity: ``--freeze-base --finetune-from-model`` starts exactly at the pretrained model.

``--hyper-adapters`` (Baziotis et al. 2022, "Multilingual machine translation with hyper-adapters", arXiv
2205.10835): one hyper-network, shared by all layers of both stacks, generates each layer's adapter from
the source-language, target-language and layer embeddings (encoder and decoder adapters both see the
pair, as in the paper)::

    e = [E_src[s]; E_tgt[t]; E_layer[l]]                    (2 * lang_dim + layer_dim)
    h = relu(W_2 relu(W_1 e + c_1) + c_2)                   (hidden_dim k)
    W_d = (H_d h + a_d).view(r, d) * s_d,  b_d = H_bd h + a_bd
    W_u = (H_u h + a_u).view(d, r) * s_u,  b_u = H_bu h + a_bu

Rescaling (the paper's fix for hyper-network training; ``--hyper-adapter-no-rescale`` ablates it): a
generated entry is a k-term dot product, so with the generator's fan-in initialisation it has O(1)
variance, whereas a normally initialised projection has variance ~1/fan_in. Used as is, the adapter
output grows with sqrt(d * r) and training is unstable. The generated matrices are therefore scaled by
s_d = 1/sqrt(d) and s_u = 1/sqrt(r) (their fan-ins). That makes their scale independent of the widths,
but not that of a regularly initialised layer: at initialisation the generated W_d and W_u have about 1/6
the std of ``nn.Linear``'s default init of the same shape (1/sqrt(3 fan_in)); measured ratios 5.3-6.4 for
d 64-512, r 16-128, k 64-256, and 12-14x below xavier at d=512, r=128. Why: the embeddings have unit
variance and h leaves two Linear + ReLU layers with fan-in init, each dividing the mean square by 6 (1/3
from the init, 1/2 from the ReLU), so E[h^2] ~ 1/36 where a unit-scale input would give 1. The adapter's
LayerNorm is an ordinary per-layer parameter (the paper's code generates it only optionally).

Parameter count of the hyper-adapters (L languages, N = encoder + decoder layers, d model dim,
r bottleneck, k hidden, p = lang_dim, q = layer_dim)::

    2 L p + N q                               language and layer embeddings
    + (2p + q) k + k + k k + k                the hyper-network MLP
    + (k + 1)(r d + r + d r + d)              generators of W_d, b_d, W_u, b_u
    + N * 2d                                  per-layer LayerNorms

versus ``N * L * (2 r d + r + d + 2d)`` for per-language adapters: the generators are shared, so the cost
grows with L only through the embeddings (``hyper_adapter_param_count`` evaluates the formula).
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from mt.common.errors import UserError
from mt.models.config import ForwardContext, TransformerConfig


def is_adapter_param(name: str) -> bool:
    """Parameters that ``--freeze-base`` keeps trainable (adapters and the shared hyper-network)."""
    return ".adapter." in name or name.startswith("adapter.")


def _group_apply(x: torch.Tensor, keys: torch.Tensor, fn) -> torch.Tensor:
    """``fn(key, rows)`` on the sentences of ``x`` (B, T, d) grouped by ``keys`` (B,); results in place."""
    uniq, counts = torch.unique(keys, return_counts=True)
    if uniq.numel() == 1:
        return fn(int(uniq[0]), x)
    order = torch.argsort(keys, stable=True)
    parts = torch.split(x.index_select(0, order), counts.tolist())
    outs = [fn(int(k), part) for k, part in zip(uniq.tolist(), parts)]
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(outs).index_select(0, inv)


def _bottleneck(x, ln: nn.LayerNorm, w_d, b_d, w_u, b_u) -> torch.Tensor:
    return x + F.linear(F.relu(F.linear(ln(x), w_d, b_d)), w_u, b_u)


def _need_langs(ctx: ForwardContext, what: str) -> None:
    if ctx.src_lang is None or ctx.tgt_lang is None:
        raise UserError(
            f"{what} need the source and target language of every sentence (ForwardContext.src_lang/tgt_lang)"
        )


class LangAdapter(nn.Module):
    """Bottleneck adapters of one layer, one per language (or per pair), stacked along dim 0."""

    def __init__(self, cfg: TransformerConfig, layer_idx: int, is_decoder: bool) -> None:
        super().__init__()
        d = cfg.decoder_embed_dim if is_decoder else cfg.encoder_embed_dim
        r = cfg.lang_adapter_bottleneck
        self.is_decoder, self.mode = is_decoder, cfg.lang_adapters
        L = len(cfg.langs)
        if self.mode == "pair":
            self.pairs = list(cfg.adapter_lang_pairs)
            index = {c: i for i, c in enumerate(cfg.langs)}
            table = torch.full((L, L), -1, dtype=torch.long)
            for i, p in enumerate(self.pairs):
                s, t = p.split("-")
                if s not in index or t not in index:
                    raise UserError(f"adapter pair {p}: language not in the dictionary's language tokens")
                table[index[s], index[t]] = i
            self.register_buffer("pair_index", table, persistent=False)
            n = len(self.pairs)
        else:
            n = L
        self.langs = list(cfg.langs)
        self.ln_weight = nn.Parameter(torch.ones(n, d))
        self.ln_bias = nn.Parameter(torch.zeros(n, d))
        self.down_weight = nn.Parameter(torch.empty(n, r, d))
        self.down_bias = nn.Parameter(torch.zeros(n, r))
        self.up_weight = nn.Parameter(torch.zeros(n, d, r))  # identity at start
        self.up_bias = nn.Parameter(torch.zeros(n, d))
        for i in range(n):
            nn.init.xavier_uniform_(self.down_weight.data[i])

    def keys(self, ctx: ForwardContext) -> torch.Tensor:
        _need_langs(ctx, "--lang-adapters")
        if self.mode == "lang":
            return ctx.lang(self.is_decoder)
        k = self.pair_index[ctx.src_lang, ctx.tgt_lang]
        if bool((k < 0).any()):
            b = int((k < 0).nonzero()[0])
            pair = f"{self.langs[int(ctx.src_lang[b])]}-{self.langs[int(ctx.tgt_lang[b])]}"
            raise UserError(f"no adapter for the pair {pair}: this model has pair adapters for {','.join(self.pairs)}")
        return k

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        def apply(k: int, rows: torch.Tensor) -> torch.Tensor:
            h = F.layer_norm(rows, rows.shape[-1:], self.ln_weight[k], self.ln_bias[k])
            return rows + F.linear(
                F.relu(F.linear(h, self.down_weight[k], self.down_bias[k])), self.up_weight[k], self.up_bias[k]
            )

        return _group_apply(x, self.keys(ctx).to(x.device), apply)


class HyperNetwork(nn.Module):
    """Generates bottleneck-adapter weights from (source language, target language, layer)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        L, d = len(cfg.langs), cfg.encoder_embed_dim
        p, q, k, r = (
            cfg.hyper_adapter_lang_dim,
            cfg.hyper_adapter_layer_dim,
            cfg.hyper_adapter_hidden_dim,
            cfg.hyper_adapter_bottleneck,
        )
        self.d, self.r, self.num_layers = d, r, cfg.encoder_layers + cfg.decoder_layers
        self.rescale = not cfg.hyper_adapter_no_rescale
        self.src_embed = nn.Embedding(L, p)
        self.tgt_embed = nn.Embedding(L, p)
        self.layer_embed = nn.Embedding(self.num_layers, q)
        for emb in (self.src_embed, self.tgt_embed, self.layer_embed):
            nn.init.normal_(emb.weight, std=1.0)
        self.mlp = nn.Sequential(nn.Linear(2 * p + q, k), nn.ReLU(), nn.Linear(k, k), nn.ReLU())
        self.gen_down = nn.Linear(k, r * d)
        self.gen_down_bias = nn.Linear(k, r)
        self.gen_up = nn.Linear(k, d * r)
        self.gen_up_bias = nn.Linear(k, d)
        for lin in (*self.mlp[::2], self.gen_down, self.gen_down_bias, self.gen_up, self.gen_up_bias):
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))  # fan-in uniform (PyTorch's Linear default)
            nn.init.zeros_(lin.bias)
        for lin in (self.gen_down_bias, self.gen_up_bias):  # biases start at zero output
            nn.init.zeros_(lin.weight)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, layer: int) -> tuple[torch.Tensor, ...]:
        """Adapter weights for U (src, tgt) combinations: W_d (U, r, d), b_d (U, r), W_u (U, d, r), b_u (U, d)."""
        lay = self.layer_embed.weight[layer].expand(src.numel(), -1)
        h = self.mlp(torch.cat([self.src_embed(src), self.tgt_embed(tgt), lay], dim=-1))
        U, d, r = src.numel(), self.d, self.r
        w_d = self.gen_down(h).view(U, r, d)
        w_u = self.gen_up(h).view(U, d, r)
        if self.rescale:
            w_d, w_u = w_d * d**-0.5, w_u * r**-0.5
        return w_d, self.gen_down_bias(h), w_u, self.gen_up_bias(h)


class HyperAdapter(nn.Module):
    """One layer's adapter, generated by the shared ``HyperNetwork`` for each language pair in the batch."""

    def __init__(self, cfg: TransformerConfig, layer_idx: int, is_decoder: bool, hyper: HyperNetwork) -> None:
        super().__init__()
        self.layer = layer_idx + (cfg.encoder_layers if is_decoder else 0)
        self.num_langs = len(cfg.langs)
        self.layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)
        self.hyper = hyper  # the same module in every layer: named_parameters()/optimizers see it once

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        _need_langs(ctx, "--hyper-adapters")
        pair = ctx.src_lang.to(x.device) * self.num_langs + ctx.tgt_lang.to(x.device)
        uniq = torch.unique(pair)
        w_d, b_d, w_u, b_u = self.hyper(uniq // self.num_langs, uniq % self.num_langs, self.layer)
        slot = {int(p): i for i, p in enumerate(uniq.tolist())}

        def apply(key: int, rows: torch.Tensor) -> torch.Tensor:
            i = slot[key]
            return _bottleneck(rows, self.layer_norm, w_d[i], b_d[i], w_u[i], b_u[i])

        return _group_apply(x, pair, apply)


# The hyper-network shared by the layers of the model being built. Transformer.__init__ builds its
# layers in order, encoder layer 0 first: that call creates the network, the later calls for the same
# config object reuse it. Weak references: nothing outlives the model.
_building: tuple[weakref.ref, weakref.ref] | None = None


def _shared_hyper_network(cfg: TransformerConfig, layer_idx: int, is_decoder: bool) -> HyperNetwork:
    global _building
    if layer_idx == 0 and not is_decoder:
        hyper = HyperNetwork(cfg)
        _building = (weakref.ref(cfg), weakref.ref(hyper))
        return hyper
    hyper = _building[1]() if _building is not None and _building[0]() is cfg else None
    if hyper is None:
        raise RuntimeError("hyper-adapters: build encoder layer 0's adapter first (Transformer does)")
    return hyper


def build_adapter(cfg: TransformerConfig, layer_idx: int, is_decoder: bool) -> nn.Module | None:
    """None in the dense baseline; a ``LangAdapter`` or ``HyperAdapter`` with ``--lang-adapters`` /
    ``--hyper-adapters``."""
    if cfg.hyper_adapters:
        return HyperAdapter(cfg, layer_idx, is_decoder, _shared_hyper_network(cfg, layer_idx, is_decoder))
    if cfg.lang_adapters:
        return LangAdapter(cfg, layer_idx, is_decoder)
    return None


def hyper_adapter_param_count(cfg: TransformerConfig) -> int:
    """The formula of the module docstring."""
    L, N, d = len(cfg.langs), cfg.encoder_layers + cfg.decoder_layers, cfg.encoder_embed_dim
    p, q, k, r = (
        cfg.hyper_adapter_lang_dim,
        cfg.hyper_adapter_layer_dim,
        cfg.hyper_adapter_hidden_dim,
        cfg.hyper_adapter_bottleneck,
    )
    return 2 * L * p + N * q + (2 * p + q) * k + k + k * k + k + (k + 1) * (r * d + r + d * r + d) + N * 2 * d


def lang_adapter_param_count(cfg: TransformerConfig) -> int:
    n = len(cfg.adapter_lang_pairs) if cfg.lang_adapters == "pair" else len(cfg.langs)
    d, r = cfg.encoder_embed_dim, cfg.lang_adapter_bottleneck
    return (cfg.encoder_layers + cfg.decoder_layers) * n * (2 * r * d + r + d + 2 * d)
