"""The sparse MoE FFN layers (``MoELayer``, ``CMRLayer``): routing, dispatch and expert parallelism put together,
with the balance losses, the routing statistics and the MoE regularisers.

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
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mt.common.errors import UserError
from mt.models import rng
from mt.models.config import ForwardContext, TransformerConfig
from mt.models.dropout import dropout
from mt.models.ffn import FeedForward
from mt.models.moe import collectives
from mt.models.moe.collectives import ExpertParallel
from mt.models.moe.dispatch import Experts, _Combine, _Dispatch, _slots, static_dispatch
from mt.models.moe.routing import Routing, capacity_for, num_moe_layers, top2_route


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
                f"parallelism each rank holds E/W experts; use a multiple of {world} experts "
                "or another --nproc_per_node"
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
            positions = collectives.max_over_ranks(positions, device, self.ep.group)
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
            keep = rng.rand(token.shape, xs) >= self.eom
        if self.training and self.fom > 0:  # FOM: drop a token's whole MoE output
            fom_keep = rng.rand((N,), xs) >= self.fom
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
        """Static gating: every expert runs on ``capacity`` slots, filled or not (``dispatch.static_dispatch``)."""
        if self.ep is not None and self.ep.world > 1:
            raise UserError(
                "--moe-inference-gating static runs in one process (it is the padded baseline); "
                "use dynamic gating with expert-parallel inference"
            )
        return static_dispatch(xs, r, self.num_experts, self._run, self.static_dispatch)

    def _replicated(self, xs: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """Expert-parallel inference when every rank holds the same ``xs`` (all ranks decode the same batch).

        Rank q routes token rows q, q + W, q + 2W, ... through the usual all-to-all dispatch (its rows go
        to the ranks holding their experts and come back), then an all-gather hands every rank the whole
        output. All ranks run the same layers in the same order, so the collectives pair up by themselves.
        """
        out = self._moe(xs[self.ep.rank :: self.ep.world], ctx, None)
        return collectives.gather_strided(out, xs.size(0), self.ep)

    def _dispatch(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert outputs for rows ``xs`` sorted by (global) expert id, ``counts[e]`` rows per expert."""
        if self.ep is None or self.ep.world == 1:
            return self._run(xs, counts.tolist())
        return collectives.exchange(xs, counts, self.ep, self._run)

    def _losses_and_stats(self, logits: torch.Tensor, r: Routing, ctx: ForwardContext) -> None:
        E = self.num_experts
        first = torch.bincount(r.top1, minlength=E).float()
        psum = r.probs.sum(0)
        n = torch.tensor([float(logits.size(0))], device=logits.device)
        if self.ep is not None and self.ep.world > 1:  # balance over the tokens of all ranks
            red = collectives.sum_over_ranks_(torch.cat([first, n]), self.ep.group)
            first, n = red[:E], red[E:]
            psum = collectives.sum_over_ranks(psum, self.ep.group)
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
            g = dropout(g, self.gate_drop, True)  # dropped gate: dense branch only
            token_keep = g > 0
        if self.training:
            self._budget(g, ctx)
        fom_keep = None
        if self.training and self.fom > 0:
            fom_keep = rng.rand(g.shape, g) >= self.fom
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
            red = collectives.sum_over_ranks(torch.stack([used, total]), ep.group)
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


def moe_layers(model: nn.Module) -> list[MoELayer]:
    return [m for m in model.modules() if isinstance(m, MoELayer)]
