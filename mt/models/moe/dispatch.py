"""The experts and the dispatch of token rows to them, as autograd functions; the padded dispatch of static gating.

Dispatch: assignments are sorted by expert id (one ``argsort``), token rows gathered with
``index_select`` (cast once to the autocast dtype first), each expert that received rows runs one GEMM
pair on its contiguous slice (a Python loop over experts, never over tokens; an expert with no rows does
not run), and each token sums its (at most two) weighted expert outputs. Dispatch, experts and combine
are three small autograd functions (``_Dispatch``, ``_GroupedFFN``, ``_Combine``) whose backward passes
are gathers and GEMMs writing straight into the stacked gradient (no scatter-add, no per-expert copies;
~1.4x HF's expert loop with its routing fixed, see bench/train_throughput.py). Expert weights are stacked
(E, ...) tensors marked ``param.expert = True`` (fairseq's marker); under bf16 autocast the experts
compute in bf16 with fp32 master weights, and the combined output is bf16 like a dense FFN's.

Static gating (inference, ``static_dispatch``) pads every expert to its capacity instead (see
``mt.models.moe.inference``). ``lazy_experts()`` builds ``Experts`` without weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from mt.models import dropout, gemm_shapes, rng
from mt.models.moe.routing import Routing


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
        mask_out.copy_(dropout.keep_mask(rng.draw_seed(), mask_out.shape, p, scaled=False))
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


def pad_segments(x: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, list[int], torch.Tensor | None]:
    """Rows ``x`` grouped in segments of ``counts`` rows -> (zero-padded rows, padded counts, positions or None).

    Each segment is rounded up to ``gemm_shapes.row_multiple(x)`` rows (CPU bf16/fp16: 64, else 1: then ``x``
    itself comes back); ``out.index_select(0, pos)`` takes a padded result back to ``x``'s rows. Used by the
    training experts (``_GroupedFFN``) and the decoding expert runners (``mt.generate.expert_cache``)."""
    padded, pos = _padded_layout(counts, gemm_shapes.row_multiple(x))
    if pos is None:
        return x, padded, None
    pos = pos.to(x.device)
    xp = x.new_zeros(sum(padded), x.size(1))
    xp.index_copy_(0, pos, x)
    return xp, padded, pos


class _GroupedFFN(torch.autograd.Function):
    """FFN experts over rows grouped by expert (``counts``); experts without rows do not run."""

    @staticmethod
    def forward(ctx, x, counts: list[int], p: float, w1, b1, w2, b2):
        dt = x.dtype
        c1, cb1, c2, cb2 = (t.to(dt) for t in (w1, b1, w2, b2))  # one cast of the stacked weights
        xp, padded, pos = pad_segments(x, counts)
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


# --- static gating: every expert on its padded capacity --------------------------------------------
def static_dispatch(
    xs: torch.Tensor,
    r: Routing,
    num_experts: int,
    run: Callable[[torch.Tensor, list[int]], torch.Tensor],
    how: str = "einsum",
) -> torch.Tensor:
    """Static gating (fairseq / GShard inference): every expert runs on ``r.capacity`` slots, filled or not.

    ``how="einsum"``: one-hot dispatch and combine tensors (N, E, C) and two einsums, as fairseq's
    ``MOELayer`` (``"sec,sm->ecm"`` / ``"sec,ecm->sm"``); ``"index"``: the same padded (E, C, d) buffer filled
    by indexing (no N x E x C tensors). Kept assignments are those of ``r``: position p of expert e (its p-th
    assignment in routing order) goes to slot (e, p). ``run`` computes the experts on rows grouped by expert.
    """
    E, C, N, d = num_experts, r.capacity, xs.size(0), xs.size(1)
    counts = torch.bincount(r.expert, minlength=E)
    pos = torch.arange(r.expert.numel(), device=xs.device) - (torch.cumsum(counts, 0) - counts)[r.expert]
    if how == "einsum":
        dispatch = xs.new_zeros(N, E, C)
        dispatch[r.token, r.expert, pos] = 1.0
        combine = xs.new_zeros(N, E, C)
        combine[r.token, r.expert, pos] = r.weight.to(xs.dtype)
        dispatched = torch.einsum("nec,nd->ecd", dispatch, xs)
        ys = run(dispatched.reshape(E * C, d), [C] * E)
        return torch.einsum("nec,ecd->nd", combine.to(ys.dtype), ys.view(E, C, d))
    slot = r.expert * C + pos
    buf = xs.new_zeros(E * C, d)
    buf[slot] = xs.index_select(0, r.token)
    ys = run(buf, [C] * E).index_select(0, slot)
    return _gather_pad(ys * r.weight.to(ys.dtype)[:, None], _slots(r.token, N))
