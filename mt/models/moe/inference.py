"""Inference modes of the MoE layers, set model-wide: gating, and all experts on every rank for decoding.

Inference (Huang et al. 2023, "Towards MoE deployment", arXiv 2303.06182; set up by
``mt.generate.moe_inference``):
- dynamic gating (``gating="dynamic"``, the eval default): no capacity, nothing dropped; each expert runs
  on exactly the rows routed to it (the sorted dispatch of ``dispatch``). This was already our eval path with the
  default fraction 1.0; the mode makes it explicit;
- static gating (``"static"``, the baseline the paper measured, fairseq / GShard inference): capacity
  ``ceil(fraction * N)`` and the dispatch padded to it: one-hot (N, E, C) dispatch / combine tensors and
  einsums (or indexing into a zero (E, C, d) buffer), every expert running on its C slots, filled or not
  (``dispatch.static_dispatch``).
  Both route with ``top2_route``: when nothing is over capacity they keep the same assignments and weights
  and give the same output;
- ``runner(x, counts)`` runs the local experts (default ``Experts``; inference installs an expert cache,
  ``mt.generate.expert_cache``); ``route_hook(layer, routing)`` observes eval routing (``mt-moe-stats``);
  ``lazy_experts()`` builds models without expert weights (they come from the checkpoint on demand);
- expert-parallel inference: ``expert_parallel_(..., placement=..., replicated=True)``. A placement
  relabels each layer's experts (``permute_experts_``) so each rank's experts are a contiguous block; all
  ranks decode the same batch and each routes a 1/W share of the token rows through the all-to-all
  exchange (``collectives.exchange``), then an all-gather gives every rank the whole output
  (``MoELayer._replicated``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

from mt.common.errors import UserError
from mt.models.moe.collectives import all_gather_cat
from mt.models.moe.layers import moe_layers


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
            p.data = all_gather_cat(p.data, m.ep.world, m.ep.group)
        m.ep = None
    try:
        yield
    finally:
        for m, ep, datas in saved:
            for p, data in zip(m.experts.parameters(), datas):
                p.data = data
            m.ep = ep
