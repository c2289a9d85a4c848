"""Top-2 gating of the sparse MoE layers: which layers are sparse, each expert's capacity, and the routing.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mt.models import rng
from mt.models.config import TransformerConfig


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
        u = rng.rand(noisy.shape, noisy).clamp_(1e-9, 1 - 1e-9)
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
        keep2 = (2 * h2.detach()) > rng.rand(h2.shape, h2)
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
