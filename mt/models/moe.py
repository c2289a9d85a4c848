"""Sparse Mixture-of-Experts FFN layers: GShard top-2 gating, EOM / FOM, Conditional MoE Routing, and
expert parallelism (each rank holds E/W experts, tokens travel with ``all_to_all``).

``build_ffn`` (``mt.models.ffn``) returns a ``MoELayer`` (or a ``CMRLayer`` with ``--moe-cmr``) for every
``--moe-freq``-th layer of each stack: layer i (0-based) is sparse when ``(i + 1) % moe_freq == 0``, as
fairseq's ``--moe-freq`` and HF NLLB-MoE's ``encoder_sparse_step``. The layer sees the layer-normed
hidden states and returns the FFN output; the Transformer layer owns the residual and dropout.

Routing (``top2_route``; GShard, Lepikhin et al. 2020, as fairseq's ``top2gating``):
- the gate is ``softmax(x W_g)``, computed in fp32 with autocast off (bf16 logits make top-2 choices flip);
- expert 1 = argmax; expert 2 = argmax of the other experts' logits, plus Gumbel noise with
  ``--moe-second-expert-policy sampling``; ``random`` keeps expert 2 with probability ``min(1, 2 g2)``;
  ``all`` always keeps it. Noise and random dropping are training-only here (fairseq also samples at
  inference; we keep inference deterministic);
- capacity (assignments an expert accepts from one rank's batch), in training by
  ``--moe-train-capacity-rule``: ``nonpad`` (default) ``ceil(factor * 2 * N / E)`` with N the non-padding
  tokens, or ``fairseq`` ``ceil(factor * 2 * ceil(S / E))`` with S = B x T counting padding too (fairseq's
  top2gating ``2 * ceil(S / E)`` at factor 1; under expert parallelism S is the largest rank's, as fairseq
  pads every rank's batch to it). Padding takes no slot under either rule, so ``fairseq`` gives a batch
  more room the more padding it has; ``nonpad`` keeps the dropped share independent of padding. At eval
  with static gating: ``ceil(fraction * N)`` (``--moe-eval-capacity-token-fraction``; the released
  NLLB-MoE uses 1.0, i.e. nothing dropped; dynamic gating, the eval default, has no capacity);
  first-choice assignments fill an expert before second choices, each in token order; assignments past
  capacity are dropped (the token keeps its other expert, or only the residual);
- combine weights g1, g2 are renormalised to sum to 1 over the kept experts (or before dropping with
  ``--moe-normalize-gate-prob-before-dropping``);
- ``--moe-batch-prioritized-routing`` (fairseq's flag, HF NLLB-MoE's ``batch_prioritized_routing``): the
  tokens claim capacity in order of their top-1 probability, highest first, instead of token order. It
  decides only which assignments are dropped, so it changes nothing when nothing is over capacity (eval
  with dynamic gating or a capacity fraction of 1.0).

Dispatch: assignments are sorted by expert id (one ``argsort``), token rows gathered with
``index_select`` (cast once to the autocast dtype first), each expert that received rows runs one GEMM
pair on its contiguous slice (a Python loop over experts, never over tokens; an expert with no rows does
not run), and each token sums its (at most two) weighted expert outputs. Dispatch, experts and combine
are three small autograd functions (``_Dispatch``, ``_GroupedFFN``, ``_Combine``) whose backward passes
are gathers and GEMMs writing straight into the stacked gradient (no scatter-add, no per-expert copies;
~1.4x HF's expert loop with its routing fixed, see bench/train_throughput.py). Expert weights are stacked
(E, ...) tensors marked ``param.expert = True`` (fairseq's marker); under bf16 autocast the experts
compute in bf16 with fp32 master weights, and the combined output is bf16 like a dense FFN's.

Losses and stats (training only): ``moe_gate_loss`` = E * sum_e f_e * P_e (f_e: fraction of tokens whose
first choice is e, P_e: mean gate probability of e; 1 for uniform routing, up to E when everything goes to
one expert), averaged over MoE layers (fairseq's ``--moe-gate-loss-combine-method average``); under
expert parallelism f and P are taken over the tokens of all ranks (an all-reduce of 2E+1 numbers), so W
ranks optimise the same balance loss as one process on the whole batch. ``moe_z_loss`` = mean
logsumexp(logits)^2 (ST-MoE), weighted by ``--moe-z-loss-wt``. Stats per layer into
``ForwardContext.add_stat``: ``moe/{enc|dec}{i}/load`` (share of assignments per expert, before
capacity), ``.../dropped`` (share of assignments over capacity), ``.../balance``; CMR layers add
``cmr/{enc|dec}{i}/gate`` and per-language ``gate@src_lang`` / ``gate@tgt_lang`` (mean CMR gate, before
gate dropout), and the aux loss ``cmr_gate_loss`` (below).

Regularisation (Elbayad et al. 2023, "Fixing MoE over-fitting on low-resource languages in multilingual
MT", arXiv 2212.07571; reference code: fairseq's NLLB branch, ``MOELayer(tok_dropout=moe_eom)`` and the
``moe_fom`` branch of ``TransformerEncoderLayer/DecoderLayer.forward``, which produced the paper's runs):
- EOM (``--moe-eom p``): in training each (token, expert) output is dropped with probability p
  (fairseq masks each dispatched expert-output slot), so a token may lose its first and/or second
  expert; the kept outputs are NOT rescaled. FOM (``--moe-fom p``): the whole MoE-layer output of a
  token is dropped with probability p (the residual passes). At inference nothing is masked and the
  outputs are scaled by (1 - p), matching the training-time expectation, exactly as that reference code
  (and HF's port of the released NLLB-MoE, ``moe_token_dropout``) does. Masked assignments are removed
  before dispatch, so EOM also saves their expert FLOPs.
- CMR (``--moe-cmr``, ``CMRLayer``): a per-token gate g = sigmoid(x w + b) blends a shared dense FFN and
  the MoE: ``out = (1 - g) * dense(x) + g * moe(x)``. ``--cmr-gate-drop p`` applies dropout to g in
  training as the reference ``CMRGate`` does (``nn.Dropout`` on the gate): with probability p, g = 0 and
  the token takes the dense branch only; kept gates are scaled by 1/(1-p). No gate dropout at eval.
  Budget loss (fairseq NLLB branch, ``moe_label_smoothed_cross_entropy``: ``--cmr-gate-loss-wt`` /
  ``--cmr-gate-loss-p``; NLLB's CMR runs used 0.1 / 0.8, the defaults of its ``sweep_mmt.py``):
  ``cmr_gate_loss = |sum g / T - p|`` where the sums run over the non-padding tokens of every CMR layer of
  the forward (encoder and decoder pooled, then one ratio; ``ForwardContext.add_budget_loss``) and g is the
  gate after gate dropout, as fairseq computes it. Weighted like ``moe_gate_loss`` (per target token of
  the update), it pushes a share p of the tokens through the experts. Under expert parallelism the sums
  run over all ranks (fairseq's ``--moe-cmr-xgpu``; NLLB's runs left it off and took one ratio per GPU).

Expert parallelism (``expert_parallel_(model, rank, world, group)``, called by mt-train under torchrun):
each MoE layer keeps experts [rank*E/W, (rank+1)*E/W) (the slices of the same seeded initialisation a
single process would have). A forward exchanges per-expert counts (``all_to_all_single`` on E ints), then
the token rows (variable splits), runs the local experts, and sends the outputs back; both exchanges are
autograd functions whose backward is the reverse exchange. Every rank must run the same number of MoE
forwards (mt-train's zero-weight dummy batches guarantee it). ``local_experts(model)`` gathers all
experts onto every rank for inference (validation, chrF decoding) so decoding needs no lock-step.

Where W ranks do not compute exactly the update of one process on the same global batch (the balance
loss, the CMR budget loss, the expert gradients and the gradient norm do match; see ``mt.train.expert_parallel``):
- capacity overflow: each rank routes its own shard (every W-th sentence) with the capacity of its own
  tokens (``ceil(factor * 2 * N_r / E)``; ``fairseq``: from the largest rank's S) and fills it in its own
  token order, so an expert popular in one shard drops assignments there even when another rank's
  share of it has room, and the capacities of the ranks need not sum to one process's. Routing matches
  one process only when nothing is over capacity, neither on any rank nor in the one process;
- random draws: the Gumbel noise of ``--moe-second-expert-policy sampling`` (the default), the keep
  draw of ``random``, EOM / FOM masks and CMR gate dropout (like every dropout) are drawn on each rank
  from its own generator (seeded per rank), so they differ from one process's draws: the update agrees in
  distribution, not number for number (``all`` with no masking and no dropout is deterministic);
- ``moe_z_loss``: each rank takes the mean over its own rows, and the loop weights a rank's aux losses
  by its share of the update's target tokens; decoder layers route target tokens, so they match, but an
  encoder layer's z-loss matches only when every rank's source / target length ratio is the same.

Inference (Huang et al. 2023, "Towards MoE deployment", arXiv 2303.06182; set up by
``mt.generate.moe_inference``):
- dynamic gating (``gating="dynamic"``, the eval default): no capacity, nothing dropped; each expert runs
  on exactly the rows routed to it (the sorted dispatch above). This was already our eval path with the
  default fraction 1.0; the mode makes it explicit;
- static gating (``"static"``, the baseline the paper measured, fairseq / GShard inference): capacity
  ``ceil(fraction * N)`` and the dispatch padded to it: one-hot (N, E, C) dispatch / combine tensors and
  einsums (or indexing into a zero (E, C, d) buffer), every expert running on its C slots, filled or not.
  Both route with ``top2_route``: when nothing is over capacity they keep the same assignments and weights
  and give the same output;
- ``runner(x, counts)`` runs the local experts (default ``Experts``; inference installs an expert cache,
  ``mt.generate.expert_cache``); ``route_hook(layer, routing)`` observes eval routing (``mt-moe-stats``);
  ``lazy_experts()`` builds models without expert weights (they come from the checkpoint on demand);
- expert-parallel inference: ``expert_parallel_(..., placement=..., replicated=True)``. A placement
  relabels each layer's experts (``permute_experts_``) so each rank's experts are a contiguous block; all
  ranks decode the same batch and each routes a 1/W share of the token rows through the all-to-all
  dispatch above, then an all-gather gives every rank the whole output (``MoELayer._replicated``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mt.common.errors import UserError
from mt.models import gemm_shapes
from mt.models.config import ForwardContext, TransformerConfig


# --- which layers --------------------------------------------------------------------------------
def is_moe_layer(cfg: TransformerConfig, layer_idx: int) -> bool:
    return cfg.moe_freq > 0 and (layer_idx + 1) % cfg.moe_freq == 0


def num_moe_layers(cfg: TransformerConfig) -> int:
    return sum(is_moe_layer(cfg, i) for i in range(cfg.encoder_layers)) + sum(
        is_moe_layer(cfg, i) for i in range(cfg.decoder_layers)
    )


# --- routing -------------------------------------------------------------------------------------
@dataclass
class Routing:
    """Top-2 routing of N tokens to E experts. Assignment arrays are sorted by expert id."""

    token: torch.Tensor  # (A,) token index of each kept assignment
    expert: torch.Tensor  # (A,) its expert (non-decreasing)
    weight: torch.Tensor  # (A,) combine weight (differentiable w.r.t. the gate)
    probs: torch.Tensor  # (N, E) gate softmax, fp32
    top1: torch.Tensor  # (N,) first choice
    routed: torch.Tensor  # (E,) assignments per expert before capacity
    dropped: torch.Tensor  # () assignments over capacity
    capacity: int


def capacity_for(
    num_tokens: int,
    num_experts: int,
    training: bool,
    train_factor: float,
    eval_fraction: float,
    rule: str = "nonpad",
    positions: int | None = None,
) -> int:
    """Assignments one expert accepts from one rank's batch (see "capacity" in the module docstring).

    ``num_tokens``: the N routed (non-padding) tokens; ``positions``: the S = B x T positions of the batch,
    padding included, that the ``fairseq`` rule counts (default N)."""
    if not training and eval_fraction > 0:
        return max(1, math.ceil(eval_fraction * num_tokens))
    if rule == "fairseq":
        S = num_tokens if positions is None else positions
        return max(1, math.ceil(train_factor * 2 * math.ceil(S / num_experts)))
    return max(1, math.ceil(train_factor * 2 * num_tokens / num_experts))


def top2_route(
    logits: torch.Tensor,
    capacity: int,
    second_expert_policy: str = "all",
    normalize_before_dropping: bool = False,
    training: bool = False,
    batch_prioritized: bool = False,
) -> Routing:
    """GShard top-2 routing of ``logits`` (N, E) with per-expert ``capacity`` (see the module docstring)."""
    logits = logits.float()
    N, E = logits.shape
    dev = logits.device
    probs = logits.softmax(dim=-1)
    top1 = probs.argmax(dim=-1)
    noisy = logits.detach()
    if training and second_expert_policy == "sampling":
        u = torch.rand_like(noisy).clamp_(1e-9, 1 - 1e-9)
        noisy = noisy - torch.log(-torch.log(u))  # Gumbel-max: sample expert 2 from the gate distribution
    top2 = noisy.scatter(1, top1[:, None], float("-inf")).argmax(dim=-1)
    g1 = probs.gather(1, top1[:, None]).squeeze(1)
    g2 = probs.gather(1, top2[:, None]).squeeze(1)
    tiny = torch.finfo(torch.float32).eps
    if normalize_before_dropping:
        denom = (g1 + g2).clamp_min(tiny)
        g1, g2 = g1 / denom, g2 / denom
    # the order in which the tokens' assignments claim capacity: token order, or with batch-prioritized
    # routing the highest top-1 probability first (fairseq / HF); first choices always before second ones
    if batch_prioritized:
        ar = torch.argsort(-probs.detach().amax(-1), stable=True)
        e1, e2, h1, h2 = top1[ar], top2[ar], g1[ar], g2[ar]
    else:
        ar = torch.arange(N, device=dev)
        e1, e2, h1, h2 = top1, top2, g1, g2
    if training and second_expert_policy == "random":
        keep2 = (2 * h2.detach()) > torch.rand_like(h2)
        tok2, exp2, gate2 = ar[keep2], e2[keep2], h2[keep2]
    else:
        tok2, exp2, gate2 = ar, e2, h2
    token = torch.cat([ar, tok2])
    expert = torch.cat([e1, exp2])
    gate = torch.cat([h1, gate2])
    # stable sort by expert: within an expert, first choices (in that order) come before second choices
    order = torch.argsort(expert, stable=True)
    token, expert, gate = token[order], expert[order], gate[order]
    routed = torch.bincount(expert, minlength=E)
    starts = torch.cumsum(routed, 0) - routed
    position = torch.arange(expert.numel(), device=dev) - starts[expert]
    kept = position < capacity
    if normalize_before_dropping:
        weight = gate
    else:  # renormalise over the experts each token actually kept (fairseq: after dropping)
        kg = gate * kept
        denom = torch.zeros(N, device=dev, dtype=kg.dtype).index_add(0, token, kg)
        weight = kg / denom.clamp_min(tiny)[token]
    dropped = (~kept).sum()
    return Routing(token[kept], expert[kept], weight[kept], probs, top1, routed, dropped, capacity)


# --- collectives with autograd -------------------------------------------------------------------
class _AllToAll(torch.autograd.Function):
    """Rows to other ranks with variable splits; backward sends the gradients back the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send: list[int], recv: list[int], group: Any) -> torch.Tensor:
        ctx.send, ctx.recv, ctx.group = send, recv, group
        out = x.new_empty((sum(recv),) + tuple(x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), recv, send, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = grad.new_empty((sum(ctx.send),) + tuple(grad.shape[1:]))
        dist.all_to_all_single(out, grad.contiguous(), ctx.send, ctx.recv, group=ctx.group)
        return out, None, None, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's copy flows back to every contributor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


@dataclass
class ExpertParallel:
    rank: int
    world: int
    group: Any = None
    replicated: bool = False  # inference: every rank holds the same tokens (see ``_replicated``)


def _expert_major(recv: torch.Tensor) -> torch.Tensor:
    """Permutation that regroups rows received as (source rank, local expert) segments by local expert.

    ``recv`` (W, El): rows rank q sent for local expert e. Row ``perm[i]`` of the received buffer is the
    i-th row in expert-major order.
    """
    W, El = recv.shape
    flat = recv.reshape(-1)
    seg_start = torch.cumsum(flat, 0) - flat
    em_len = recv.t().reshape(-1)
    em_start = seg_start.view(W, El).t().reshape(-1)
    em_offset = torch.cumsum(em_len, 0) - em_len
    seg = torch.repeat_interleave(torch.arange(W * El, device=recv.device), em_len)
    total = int(flat.sum())
    return em_start[seg] + torch.arange(total, device=recv.device) - em_offset[seg]


# --- dispatch, experts, combine as autograd functions -------------------------------------------
# Why custom functions: written with autograd ops, the dispatch gather and the combine need scatter-adds
# in backward (``index_add``: single-threaded on CPU) and the per-expert weight gradients are stacked
# afterwards (a full copy of every expert's weights per step). Each token has at most two assignments,
# so with the inverse map ``slots`` (N, 2) (a token's positions in the assignment list, A where absent)
# every direction is a gather, and the expert gradients are written into their place directly.
def _ffn_one(e: int, x, w1, b1, w2, b2, h_out, y_out, mask_out, p: float) -> None:
    """Expert e on its rows: ``h_out = relu(x w1^T + b1)`` (dropout p with ``mask_out``), ``y_out = h w2^T + b2``."""
    torch.addmm(b1, x, w1.t(), out=h_out)
    h_out.relu_()
    if mask_out is not None:
        mask_out.bernoulli_(1.0 - p)
        h_out.mul_(mask_out).mul_(1.0 / (1.0 - p))
    torch.addmm(b2, h_out, w2.t(), out=y_out)


def _padded_layout(counts: list[int], multiple: int) -> tuple[list[int], torch.Tensor | None]:
    """Segment sizes rounded up to ``multiple`` and, when any grew, the padded position of each row.

    ``_GroupedFFN`` runs each expert on such a zero-padded segment (CPU bf16: 64 rows) so that oneDNN reuses
    its per-shape kernels (``mt.models.gemm_shapes``; unpadded, the expert GEMMs of mt-train ran 5-10x slower than
    at a fixed shape). Pad rows get zero output gradients, so they change no gradient.
    """
    padded = [gemm_shapes.round_up(n, multiple) for n in counts]
    if padded == counts:
        return padded, None
    pos, start = [], 0
    for n, m in zip(counts, padded):
        pos.append(torch.arange(start, start + n))
        start += m
    return padded, torch.cat(pos) if pos else torch.zeros(0, dtype=torch.long)


class _GroupedFFN(torch.autograd.Function):
    """FFN experts over rows grouped by expert (``counts``); experts without rows do not run."""

    @staticmethod
    def forward(ctx, x, counts: list[int], p: float, w1, b1, w2, b2):
        dt = x.dtype
        c1, cb1, c2, cb2 = (t.to(dt) for t in (w1, b1, w2, b2))  # one cast of the stacked weights
        padded, pos = _padded_layout(counts, gemm_shapes.row_multiple(x))
        if pos is not None:
            pos = pos.to(x.device)
            xp = x.new_zeros(sum(padded), x.size(1))
            xp.index_copy_(0, pos, x)
        else:
            xp = x
        A, f = xp.size(0), w1.size(1)
        h = xp.new_empty(A, f)
        y = xp.new_empty(A, w2.size(1))
        mask = xp.new_empty(A, f) if p > 0 else None
        start = 0
        for e, n in enumerate(padded):
            if n:
                sl = slice(start, start + n)
                _ffn_one(e, xp[sl], c1[e], cb1[e], c2[e], cb2[e], h[sl], y[sl], None if mask is None else mask[sl], p)
                start += n
        ctx.counts, ctx.p, ctx.dtypes = padded, p, (w1.dtype, b1.dtype, w2.dtype, b2.dtype)
        ctx.save_for_backward(xp, h, mask, c1, c2, pos)
        return y if pos is None else y.index_select(0, pos)

    @staticmethod
    def backward(ctx, gy):
        x, h, mask, c1, c2, pos = ctx.saved_tensors
        gy = gy.contiguous()
        if pos is not None:  # pad rows: zero output gradient, so they add nothing below
            gy = gy.new_zeros(x.size(0), gy.size(1)).index_copy_(0, pos, gy)
        E, f, d = c1.shape
        gx = torch.empty_like(x)
        gw1, gw2 = torch.zeros_like(c1), torch.zeros_like(c2)
        acc = torch.promote_types(x.dtype, torch.float32)  # bias gradients: sums over many rows
        gb1 = torch.zeros(E, f, dtype=acc, device=x.device)
        gb2 = torch.zeros(E, d, dtype=acc, device=x.device)
        start = 0
        for e, n in enumerate(ctx.counts):
            if not n:
                continue
            sl = slice(start, start + n)
            ge, he = gy[sl], h[sl]
            torch.mm(ge.t(), he, out=gw2[e])
            torch.sum(ge, 0, dtype=acc, out=gb2[e])
            gh = torch.mm(ge, c2[e])
            gh.mul_(he > 0)
            if mask is not None:
                gh.mul_(mask[sl]).mul_(1.0 / (1.0 - ctx.p))
            torch.mm(gh.t(), x[sl], out=gw1[e])
            torch.sum(gh, 0, dtype=acc, out=gb1[e])
            torch.mm(gh, c1[e], out=gx[sl])
            start += n
        if pos is not None:
            gx = gx.index_select(0, pos)
        t1, tb1, t2, tb2 = ctx.dtypes
        return gx, None, None, gw1.to(t1), gb1.to(tb1), gw2.to(t2), gb2.to(tb2)


def _slots(token: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(N, 2): positions of each token's (at most two) assignments in ``token``; A where there is none."""
    A = token.numel()
    slots = torch.full((num_tokens, 2), A, dtype=torch.long, device=token.device)
    order = torch.argsort(token, stable=True)
    tok_sorted = token[order]
    first = torch.ones_like(tok_sorted, dtype=torch.bool)
    first[1:] = tok_sorted[1:] != tok_sorted[:-1]
    slots[tok_sorted[first], 0] = order[first]
    slots[tok_sorted[~first], 1] = order[~first]
    return slots


def _gather_pad(t: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``t[slots[:, 0]] + t[slots[:, 1]]`` where index ``len(t)`` means a zero row."""
    pad = torch.cat([t, t.new_zeros((1,) + tuple(t.shape[1:]))])
    return pad.index_select(0, slots[:, 0]) + pad.index_select(0, slots[:, 1])


class _Dispatch(torch.autograd.Function):
    """rows = x[token]; backward: each token sums the gradients of its (at most two) rows."""

    @staticmethod
    def forward(ctx, x, token, slots):
        ctx.save_for_backward(slots)
        return x.index_select(0, token)

    @staticmethod
    def backward(ctx, g):
        (slots,) = ctx.saved_tensors
        return _gather_pad(g.contiguous(), slots), None, None


class _Combine(torch.autograd.Function):
    """out[t] = sum over token t's assignments a of w[a] * ys[a]."""

    @staticmethod
    def forward(ctx, ys, w, token, slots):
        ctx.save_for_backward(ys, w, token)
        ctx.w_dtype = w.dtype
        return _gather_pad(ys * w.to(ys.dtype)[:, None], slots)

    @staticmethod
    def backward(ctx, g):
        ys, w, token = ctx.saved_tensors
        gt = g.contiguous().index_select(0, token)
        g_ys = gt * w.to(gt.dtype)[:, None]
        g_w = (gt * ys).sum(-1, dtype=torch.promote_types(ys.dtype, torch.float32)).to(ctx.w_dtype)
        return g_ys, g_w, None, None


# --- experts -------------------------------------------------------------------------------------
class Experts(nn.Module):
    """E feed-forward experts (fc1 -> ReLU -> activation dropout -> fc2) with stacked weights."""

    def __init__(self, num_experts: int, embed_dim: int, ffn_dim: int, activation_dropout: float) -> None:
        super().__init__()
        self.embed_dim, self.activation_dropout = embed_dim, activation_dropout
        if _LAZY_EXPERTS:  # inference loads them on demand (see ``lazy_experts``)
            num_experts = 0
        self.fc1_weight = nn.Parameter(torch.empty(num_experts, ffn_dim, embed_dim))
        self.fc1_bias = nn.Parameter(torch.zeros(num_experts, ffn_dim))
        self.fc2_weight = nn.Parameter(torch.empty(num_experts, embed_dim, ffn_dim))
        self.fc2_bias = nn.Parameter(torch.zeros(num_experts, embed_dim))
        for e in range(num_experts):  # each expert initialised like the dense FFN (xavier, zero bias)
            nn.init.xavier_uniform_(self.fc1_weight.data[e])
            nn.init.xavier_uniform_(self.fc2_weight.data[e])
        for p in self.parameters():
            p.expert = True  # fairseq's marker: not all-reduced across data-parallel ranks

    @property
    def num_local(self) -> int:
        return self.fc1_weight.size(0)

    def keep_(self, lo: int, hi: int) -> None:
        """Keep only experts [lo, hi) (expert parallelism); parameters stay the same objects."""
        for p in self.parameters():
            p.data = p.data[lo:hi].clone()

    def forward(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """``x`` rows grouped by local expert, ``counts[e]`` rows each; experts with no rows do not run.

        Computes in ``x``'s dtype (the stacked weights are cast once). The result stays connected to ``x``
        even without rows: under expert parallelism every rank must run the same backward collectives."""
        p = self.activation_dropout if self.training else 0.0
        return _GroupedFFN.apply(x, counts, p, self.fc1_weight, self.fc1_bias, self.fc2_weight, self.fc2_bias)


def _flatten(x: torch.Tensor, pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(B, T, d) -> (N, d) non-padding rows, their flat indices (None: all rows), their sentence index."""
    B, T, d = x.shape
    flat = x.reshape(B * T, d)
    if pad is not None and bool(pad.any()):
        idx = (~pad).reshape(-1).nonzero().squeeze(1)
        return flat.index_select(0, idx), idx, torch.div(idx, T, rounding_mode="floor")
    return flat, None, torch.arange(B * T, device=x.device) // T


def _unflatten(out: torch.Tensor, idx: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    B, T, d = shape
    if idx is not None:
        out = out.new_zeros(B * T, d).index_copy(0, idx, out)
    return out.view(B, T, d)


# --- the layers ----------------------------------------------------------------------------------
class MoELayer(nn.Module):
    """Top-2 sparse MoE FFN with EOM (and FOM when not inside a ``CMRLayer``)."""

    def __init__(self, cfg: TransformerConfig, layer_idx: int, is_decoder: bool, apply_fom: bool = True) -> None:
        super().__init__()
        d = cfg.decoder_embed_dim if is_decoder else cfg.encoder_embed_dim
        f = cfg.decoder_ffn_embed_dim if is_decoder else cfg.encoder_ffn_embed_dim
        self.num_experts, self.is_decoder = cfg.moe_expert_count, is_decoder
        self.tag = f"{'dec' if is_decoder else 'enc'}{layer_idx}"
        self.wg = nn.Linear(d, self.num_experts, bias=False)
        nn.init.xavier_uniform_(self.wg.weight)
        self.experts = Experts(self.num_experts, d, f, cfg.activation_dropout)
        self.policy = cfg.moe_second_expert_policy
        self.normalize_before_dropping = cfg.moe_normalize_gate_prob_before_dropping
        self.batch_prioritized = cfg.moe_batch_prioritized_routing
        self.train_capacity_factor = cfg.moe_train_capacity_factor
        self.capacity_rule = cfg.moe_train_capacity_rule
        self.eval_capacity_fraction = cfg.moe_eval_capacity_token_fraction
        self.eom, self.fom = cfg.moe_eom, (cfg.moe_fom if apply_fom else 0.0)
        self.loss_scale = 1.0 / max(num_moe_layers(cfg), 1)
        self.ep: ExpertParallel | None = None
        # inference (see "Inference" in the module docstring): gating mode, who runs the experts, observers
        self.gating = "dynamic"
        self.static_dispatch = "einsum"
        self.runner: Callable[[torch.Tensor, list[int]], torch.Tensor] | None = None
        self.route_hook: Callable[["MoELayer", Routing], None] | None = None

    # expert parallelism
    def shard_(self, rank: int, world: int, group: Any = None, replicated: bool = False) -> None:
        if self.num_experts % world:
            raise UserError(
                f"--moe-expert-count {self.num_experts} is not divisible by the world size {world}: with expert "
                f"parallelism each rank holds E/W experts; use a multiple of {world} experts or another --nproc_per_node"
            )
        per = self.num_experts // world
        self.experts.keep_(rank * per, (rank + 1) * per)
        self.ep = ExpertParallel(rank, world, group, replicated)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        xs, idx, sent = _flatten(x, ctx.padding_mask(self.is_decoder))
        out = self.moe(xs, ctx, positions=x.size(0) * x.size(1))
        return _unflatten(out, idx, x.shape)

    def moe(
        self,
        xs: torch.Tensor,
        ctx: ForwardContext,
        token_keep: torch.Tensor | None = None,
        positions: int | None = None,
    ) -> torch.Tensor:
        """MoE output for the (N, d) token rows ``xs``; tokens with ``token_keep`` False get zeros.

        ``positions``: B x T of the padded batch the rows came from (the ``fairseq`` capacity rule counts it)."""
        if self.ep is not None and self.ep.replicated and self.ep.world > 1 and not self.training:
            return self._replicated(xs, ctx)
        return self._moe(xs, ctx, token_keep, positions)

    def _capacity(self, num_tokens: int, positions: int | None, device: torch.device) -> int:
        if not self.training and self.gating == "dynamic":
            return max(num_tokens, 1)  # no capacity: an expert takes every token routed to it
        ep = self.ep is not None and self.ep.world > 1
        if self.training and ep and self.capacity_rule == "fairseq" and positions is not None:
            # fairseq pads every rank's batch to the largest one (an all-reduce max) before top2gating
            t = torch.tensor([positions], dtype=torch.long, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.ep.group)
            positions = int(t)
        return capacity_for(
            num_tokens,
            self.num_experts,
            self.training,
            self.train_capacity_factor,
            self.eval_capacity_fraction,
            self.capacity_rule,
            positions,
        )

    def _moe(
        self, xs: torch.Tensor, ctx: ForwardContext, token_keep: torch.Tensor | None, positions: int | None = None
    ) -> torch.Tensor:
        N, E = xs.size(0), self.num_experts
        with torch.autocast(xs.device.type, enabled=False):
            logits = F.linear(xs.float(), self.wg.weight.float())
        capacity = self._capacity(N, positions, xs.device)
        r = top2_route(
            logits, capacity, self.policy, self.normalize_before_dropping, self.training, self.batch_prioritized
        )
        if self.training:
            self._losses_and_stats(logits, r, ctx)
        elif self.route_hook is not None:
            self.route_hook(self, r)
        dev = xs.device.type
        if not self.training and self.gating == "static":
            if torch.is_autocast_enabled(dev):
                xs = xs.to(torch.get_autocast_dtype(dev))
            return self._eval_scale(self._static(xs, r))
        token, expert, weight = r.token, r.expert, r.weight
        keep = None
        if self.training and self.eom > 0:  # EOM: drop (token, expert) outputs
            keep = torch.rand(token.shape, device=xs.device) >= self.eom
        if self.training and self.fom > 0:  # FOM: drop a token's whole MoE output
            fom_keep = torch.rand(N, device=xs.device) >= self.fom
            token_keep = fom_keep if token_keep is None else token_keep & fom_keep
        if token_keep is not None:
            keep = token_keep[token] if keep is None else keep & token_keep[token]
        if keep is not None:
            token, expert, weight = token[keep], expert[keep], weight[keep]
        counts = torch.bincount(expert, minlength=E)
        if torch.is_autocast_enabled(dev):  # experts compute in the autocast dtype: cast the N rows once
            xs = xs.to(torch.get_autocast_dtype(dev))
        slots = _slots(token, N)
        ys = self._dispatch(_Dispatch.apply(xs, token, slots), counts)
        out = _Combine.apply(ys, weight, token, slots)  # in the experts' dtype, like a dense FFN's bf16 output
        return out if self.training else self._eval_scale(out)

    def _eval_scale(self, out: torch.Tensor) -> torch.Tensor:
        """EOM / FOM at inference: the training-time expectation (1 - p) (see the module docstring)."""
        if self.eom > 0 or self.fom > 0:
            out = out * ((1.0 - self.eom) * (1.0 - self.fom))
        return out

    def _run(self, xs: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """The local experts on rows grouped by local expert (``runner`` when inference installed one)."""
        return (self.runner or self.experts)(xs, counts)

    def _static(self, xs: torch.Tensor, r: Routing) -> torch.Tensor:
        """Static gating (fairseq / GShard inference): every expert runs on ``capacity`` slots, filled or not.

        ``static_dispatch="einsum"``: one-hot dispatch and combine tensors (N, E, C) and two einsums, as
        fairseq's ``MOELayer`` (``"sec,sm->ecm"`` / ``"sec,ecm->sm"``); ``"index"``: the same padded
        (E, C, d) buffer filled by indexing (no N x E x C tensors). Kept assignments are those of ``r``:
        position p of expert e (its p-th assignment in routing order) goes to slot (e, p).
        """
        if self.ep is not None and self.ep.world > 1:
            raise UserError(
                "--moe-inference-gating static runs in one process (it is the padded baseline); "
                "use dynamic gating with expert-parallel inference"
            )
        E, C, N, d = self.num_experts, r.capacity, xs.size(0), xs.size(1)
        counts = torch.bincount(r.expert, minlength=E)
        pos = torch.arange(r.expert.numel(), device=xs.device) - (torch.cumsum(counts, 0) - counts)[r.expert]
        if self.static_dispatch == "einsum":
            dispatch = xs.new_zeros(N, E, C)
            dispatch[r.token, r.expert, pos] = 1.0
            combine = xs.new_zeros(N, E, C)
            combine[r.token, r.expert, pos] = r.weight.to(xs.dtype)
            dispatched = torch.einsum("nec,nd->ecd", dispatch, xs)
            ys = self._run(dispatched.reshape(E * C, d), [C] * E)
            return torch.einsum("nec,ecd->nd", combine.to(ys.dtype), ys.view(E, C, d))
        slot = r.expert * C + pos
        buf = xs.new_zeros(E * C, d)
        buf[slot] = xs.index_select(0, r.token)
        ys = self._run(buf, [C] * E).index_select(0, slot)
        return _gather_pad(ys * r.weight.to(ys.dtype)[:, None], _slots(r.token, N))

    def _replicated(self, xs: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """Expert-parallel inference when every rank holds the same ``xs`` (all ranks decode the same batch).

        Rank q routes token rows q, q + W, q + 2W, ... through the usual all-to-all dispatch (its rows go
        to the ranks holding their experts and come back), then an all-gather hands every rank the whole
        output. All ranks run the same layers in the same order, so the collectives pair up by themselves.
        """
        W, q, group = self.ep.world, self.ep.rank, self.ep.group
        N, d = xs.shape
        out = self._moe(xs[q::W], ctx, None)
        per = max(1, -(-N // W))
        buf = out.new_zeros(per, d)
        buf[: out.size(0)] = out
        parts = [torch.empty_like(buf) for _ in range(W)]
        dist.all_gather(parts, buf, group=group)
        return torch.stack(parts, 1).reshape(per * W, d)[:N]  # row i*W + q = rank q's row i

    def _dispatch(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert outputs for rows ``xs`` sorted by (global) expert id, ``counts[e]`` rows per expert."""
        if self.ep is None or self.ep.world == 1:
            return self._run(xs, counts.tolist())
        W, group = self.ep.world, self.ep.group
        El = self.num_experts // W
        recv = torch.empty_like(counts)
        dist.all_to_all_single(recv, counts, group=group)  # recv[q*El + e]: rows rank q sends my expert e
        send_splits = counts.view(W, El).sum(1).tolist()
        recv = recv.view(W, El)
        recv_splits = recv.sum(1).tolist()
        xr = _AllToAll.apply(xs, send_splits, recv_splits, group)
        perm = _expert_major(recv)
        ye = self._run(xr.index_select(0, perm), recv.sum(0).tolist())
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        return _AllToAll.apply(ye.index_select(0, inv), recv_splits, send_splits, group)

    def _losses_and_stats(self, logits: torch.Tensor, r: Routing, ctx: ForwardContext) -> None:
        E = self.num_experts
        first = torch.bincount(r.top1, minlength=E).float()
        psum = r.probs.sum(0)
        n = torch.tensor([float(logits.size(0))], device=logits.device)
        if self.ep is not None and self.ep.world > 1:  # balance over the tokens of all ranks
            red = torch.cat([first, n])
            dist.all_reduce(red, group=self.ep.group)
            first, n = red[:E], red[E:]
            psum = _AllReduceSum.apply(psum, self.ep.group)
        n = n.clamp_min(1.0)
        balance = E * ((first / n) * (psum / n)).sum()
        ctx.add_aux_loss("moe_gate_loss", balance * self.loss_scale)
        z = torch.logsumexp(logits, dim=-1).pow(2).mean() if logits.size(0) else logits.sum()
        ctx.add_aux_loss("moe_z_loss", z * self.loss_scale)
        total = r.routed.sum()
        ctx.add_stat(f"moe/{self.tag}/load", r.routed, total)
        ctx.add_stat(f"moe/{self.tag}/dropped", r.dropped, total)
        ctx.add_stat(f"moe/{self.tag}/balance", balance, 1.0)


class CMRLayer(nn.Module):
    """Conditional MoE Routing: ``(1 - g) * dense(x) + g * moe(x)`` with a per-token sigmoid gate g."""

    def __init__(self, cfg: TransformerConfig, layer_idx: int, is_decoder: bool) -> None:
        from mt.models.ffn import FeedForward

        super().__init__()
        d = cfg.decoder_embed_dim if is_decoder else cfg.encoder_embed_dim
        f = cfg.decoder_ffn_embed_dim if is_decoder else cfg.encoder_ffn_embed_dim
        self.is_decoder, self.tag = is_decoder, f"{'dec' if is_decoder else 'enc'}{layer_idx}"
        self.moe = MoELayer(cfg, layer_idx, is_decoder, apply_fom=False)
        self.dense = FeedForward(d, f, cfg.activation_dropout)
        self.gate = nn.Linear(d, 1)
        nn.init.xavier_uniform_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.gate_drop, self.fom, self.gate_loss_p = cfg.cmr_gate_drop, cfg.moe_fom, cfg.cmr_gate_loss_p
        self.num_langs = len(cfg.langs)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        xs, idx, sent = _flatten(x, ctx.padding_mask(self.is_decoder))
        with torch.autocast(xs.device.type, enabled=False):
            g = torch.sigmoid(F.linear(xs.float(), self.gate.weight.float(), self.gate.bias.float())).squeeze(1)
        if self.training:
            self._stats(g, sent, ctx)
        token_keep = None
        if self.training and self.gate_drop > 0:
            g = F.dropout(g, self.gate_drop, True)  # dropped gate: dense branch only
            token_keep = g > 0
        if self.training:
            self._budget(g, ctx)
        fom_keep = None
        if self.training and self.fom > 0:
            fom_keep = torch.rand(g.shape, device=g.device) >= self.fom
            token_keep = fom_keep if token_keep is None else token_keep & fom_keep
        dense = self.dense(xs, ctx).float()
        moe = self.moe.moe(xs, ctx, token_keep, positions=x.size(0) * x.size(1))
        out = (1.0 - g)[:, None] * dense + g[:, None] * moe
        if fom_keep is not None:
            out = out * fom_keep[:, None]
        elif not self.training and self.fom > 0:
            out = out * (1.0 - self.fom)
        return _unflatten(out, idx, x.shape)

    def _budget(self, g: torch.Tensor, ctx: ForwardContext) -> None:
        """The budget loss ``cmr_gate_loss`` = |sum g / tokens - p| over all CMR layers (see the module docstring)."""
        used = g.sum()
        total = torch.full((), float(g.numel()), device=g.device)
        ep = self.moe.ep
        if ep is not None and ep.world > 1:  # over the tokens of all ranks, as one process on the whole batch
            red = _AllReduceSum.apply(torch.stack([used, total]), ep.group)
            used, total = red[0], red[1]
        ctx.add_budget_loss("cmr_gate_loss", used, total, self.gate_loss_p)

    def _stats(self, g: torch.Tensor, sent: torch.Tensor, ctx: ForwardContext) -> None:
        g = g.detach()
        ctx.add_stat(f"cmr/{self.tag}/gate", g.sum(), float(g.numel()))
        L = self.num_langs
        for side, lang in (("src_lang", ctx.src_lang), ("tgt_lang", ctx.tgt_lang)):
            if lang is None or L == 0:
                continue
            tl = lang.to(g.device)[sent]
            total = torch.zeros(L, dtype=torch.float64, device=g.device).index_add(0, tl, g.double())
            ctx.add_stat(f"cmr/{self.tag}/gate@{side}", total, torch.bincount(tl, minlength=L).double())


def build_moe_ffn(cfg: TransformerConfig, layer_idx: int, is_decoder: bool) -> nn.Module:
    return CMRLayer(cfg, layer_idx, is_decoder) if cfg.moe_cmr else MoELayer(cfg, layer_idx, is_decoder)


# --- model-level helpers -------------------------------------------------------------------------
def moe_layers(model: nn.Module) -> list[MoELayer]:
    return [m for m in model.modules() if isinstance(m, MoELayer)]


Placement = dict[str, list[list[int]]]  # MoE layer tag ("enc1", "dec3") -> the experts of each rank


def placement_order(ranks: Sequence[Sequence[int]], num_experts: int, where: str = "placement") -> list[int]:
    """The experts of rank 0, then rank 1, ...: a permutation of 0..E-1 with E/W experts per rank."""
    order = [int(e) for r in ranks for e in r]
    W = len(ranks)
    if W < 1 or sorted(order) != list(range(num_experts)) or any(len(r) != num_experts // W for r in ranks):
        raise UserError(
            f"{where}: expected every expert 0..{num_experts - 1} exactly once, {num_experts}/W per rank "
            f"(got {[list(r) for r in ranks]}); write it again with mt-moe-stats --num-ranks W"
        )
    return order


def permute_experts_(layer: MoELayer, order: Sequence[int]) -> None:
    """Relabel experts so that expert i becomes old expert ``order[i]``: the gate's rows and the stacked
    expert weights move together, so the layer computes the same function (ties between exactly equal
    gate logits aside). Layers built with ``lazy_experts`` hold no expert weights: only the gate moves."""
    idx = torch.as_tensor(list(order), dtype=torch.long)
    E = layer.num_experts
    if sorted(idx.tolist()) != list(range(E)):
        raise UserError(f"MoE layer {layer.tag}: {list(order)} is not a permutation of its {E} experts")
    layer.wg.weight.data = layer.wg.weight.data.index_select(0, idx.to(layer.wg.weight.device))
    for p in layer.experts.parameters():
        if p.size(0) == E:
            p.data = p.data.index_select(0, idx.to(p.device))


def expert_parallel_(
    model: nn.Module,
    rank: int,
    world: int,
    group: Any = None,
    placement: Placement | None = None,
    replicated: bool = False,
) -> None:
    """Keep this rank's E/W experts in every MoE layer (UserError when E is not divisible by W).

    Without ``placement`` rank r holds experts [r*E/W, (r+1)*E/W). A ``placement`` (inference) gives each
    layer's experts per rank: the layer is first relabelled (``permute_experts_``) so that rank r's experts
    are the contiguous block r. ``replicated`` (inference): every rank holds the same tokens.
    """
    for m in moe_layers(model):
        if placement is not None:
            if m.tag not in placement:
                raise UserError(
                    f"the expert placement has no entry for MoE layer {m.tag} (it has {', '.join(placement)})"
                )
            ranks = placement[m.tag]
            if len(ranks) != world:
                raise UserError(
                    f"the expert placement is for {len(ranks)} ranks, this run has {world}; "
                    f"write one with mt-moe-stats --num-ranks {world}"
                )
            permute_experts_(m, placement_order(ranks, m.num_experts, f"placement of {m.tag}"))
        m.shard_(rank, world, group, replicated)


def set_inference_gating(
    model: nn.Module,
    gating: str = "dynamic",
    eval_capacity_token_fraction: float | None = None,
    static_dispatch: str = "einsum",
) -> None:
    """Gating at inference for every MoE layer: ``dynamic`` (no capacity, each expert runs on exactly its
    tokens) or ``static`` (capacity ``ceil(fraction * tokens)``, dispatch padded to it; see ``_static``)."""
    if gating not in ("dynamic", "static"):
        raise UserError(f"--moe-inference-gating must be dynamic or static, got {gating!r}")
    if static_dispatch not in ("einsum", "index"):
        raise UserError(f"static dispatch must be einsum or index, got {static_dispatch!r}")
    for m in moe_layers(model):
        m.gating, m.static_dispatch = gating, static_dispatch
        if eval_capacity_token_fraction is not None:
            m.eval_capacity_fraction = eval_capacity_token_fraction


_LAZY_EXPERTS = False


@contextmanager
def lazy_experts() -> Iterator[None]:
    """Models built inside hold no expert weights (0 experts per layer, nothing allocated or initialised):
    inference brings them in from a checkpoint on demand (``mt.generate.expert_cache``), so a model larger
    than memory can be built."""
    global _LAZY_EXPERTS
    saved, _LAZY_EXPERTS = _LAZY_EXPERTS, True
    try:
        yield
    finally:
        _LAZY_EXPERTS = saved


def is_expert_parallel(model: nn.Module) -> bool:
    return any(m.ep is not None and m.ep.world > 1 for m in moe_layers(model))


@contextmanager
def local_experts(model: nn.Module) -> Iterator[None]:
    """Inside: every rank holds all experts and runs MoE layers without collectives (inference only).

    Collective on entry (all-gather of the expert weights); the sharded weights come back on exit.
    """
    layers = [m for m in moe_layers(model) if m.ep is not None and m.ep.world > 1]
    saved = []
    for m in layers:
        params = list(m.experts.parameters())
        saved.append((m, m.ep, [p.data for p in params]))
        for p in params:
            parts = [torch.empty_like(p.data) for _ in range(m.ep.world)]
            dist.all_gather(parts, p.data.contiguous(), group=m.ep.group)
            p.data = torch.cat(parts)
        m.ep = None
    try:
        yield
    finally:
        for m, ep, datas in saved:
            for p, data in zip(m.experts.parameters(), datas):
                p.data = data
            m.ep = ep
