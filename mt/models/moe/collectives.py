"""Expert parallelism: the collectives of the MoE layers (autograd-aware all-to-all and all-reduce).

Expert parallelism (``placement.expert_parallel_(model, rank, world, group)``, called by mt-train under torchrun):
each MoE layer keeps experts [rank*E/W, (rank+1)*E/W) (the slices of the same seeded initialisation a
single process would have). A forward exchanges per-expert counts (``all_to_all_single`` on E ints), then
the token rows (variable splits), runs the local experts, and sends the outputs back; both exchanges are
autograd functions whose backward is the reverse exchange. Every rank must run the same number of MoE
forwards (mt-train's zero-weight dummy batches guarantee it). ``inference.local_experts(model)`` gathers all
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

``MoELayer`` and ``local_experts`` call only the functions below: the one place MoE code talks to other ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


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


# --- the exchanges of one MoE forward -------------------------------------------------------------
def exchange(
    xs: torch.Tensor, counts: torch.Tensor, ep: ExpertParallel, run: Callable[[torch.Tensor, list[int]], torch.Tensor]
) -> torch.Tensor:
    """Expert outputs for rows ``xs`` sorted by (global) expert id, ``counts[e]`` rows per expert, when each of
    the ``ep.world`` ranks holds E/W experts: rows travel to their experts' rank, ``run`` computes the local
    experts on rows grouped by local expert, and the outputs travel back (a differentiable round trip)."""
    W, group = ep.world, ep.group
    El = counts.numel() // W
    recv = torch.empty_like(counts)
    dist.all_to_all_single(recv, counts, group=group)  # recv[q*El + e]: rows rank q sends my expert e
    send_splits = counts.view(W, El).sum(1).tolist()
    recv = recv.view(W, El)
    recv_splits = recv.sum(1).tolist()
    xr = _AllToAll.apply(xs, send_splits, recv_splits, group)
    perm = _expert_major(recv)
    ye = run(xr.index_select(0, perm), recv.sum(0).tolist())
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return _AllToAll.apply(ye.index_select(0, inv), recv_splits, send_splits, group)


def gather_strided(out: torch.Tensor, num_rows: int, ep: ExpertParallel) -> torch.Tensor:
    """All ``num_rows`` rows when rank q computed ``out`` = rows q, q + W, q + 2W, ... (replicated inference)."""
    W = ep.world
    per = max(1, -(-num_rows // W))
    buf = out.new_zeros(per, out.size(1))
    buf[: out.size(0)] = out
    parts = [torch.empty_like(buf) for _ in range(W)]
    dist.all_gather(parts, buf, group=ep.group)
    return torch.stack(parts, 1).reshape(per * W, out.size(1))[:num_rows]  # row i*W + q = rank q's row i


def max_over_ranks(value: int, device: torch.device, group: Any) -> int:
    """The largest ``value`` of all ranks."""
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t)


def sum_over_ranks(x: torch.Tensor, group: Any) -> torch.Tensor:
    """``x`` summed over all ranks; the gradient reaches every rank's contribution."""
    return _AllReduceSum.apply(x, group)


def sum_over_ranks_(x: torch.Tensor, group: Any) -> torch.Tensor:
    """In place, without autograd (counts and sizes)."""
    dist.all_reduce(x, group=group)
    return x


def all_gather_cat(t: torch.Tensor, world: int, group: Any) -> torch.Tensor:
    """Every rank's ``t`` concatenated in rank order (dim 0)."""
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts)
