"""Sparse Mixture-of-Experts FFN layers: GShard top-2 gating, EOM / FOM, Conditional MoE Routing, and
expert parallelism (each rank holds E/W experts, tokens travel with ``all_to_all``).

``build_ffn`` (``mt.models.transformer``) returns a ``MoELayer`` (or a ``CMRLayer`` with ``--moe-cmr``) for every
``--moe-freq``-th layer of each stack: layer i (0-based) is sparse when ``(i + 1) % moe_freq == 0``, as
fairseq's ``--moe-freq`` and HF NLLB-MoE's ``encoder_sparse_step``. The layer sees the layer-normed
hidden states and returns the FFN output; the Transformer layer owns the residual and dropout.

The package, one module per concern (lowest first; each imports only those above it in this list):

- ``routing``: which layers are sparse, expert capacity, GShard top-2 routing (``top2_route``);
- ``dispatch``: the experts (stacked weights) and the dispatch / grouped GEMMs / combine as autograd
  functions; the padded dispatch of static gating; ``lazy_experts``;
- ``collectives``: expert parallelism's all-to-all exchange and all-reduces (with autograd);
- ``layers``: ``MoELayer`` and ``CMRLayer`` (losses, stats, EOM / FOM / CMR regularisation);
- ``placement``: which rank holds which experts (computed, read from placement.json, applied);
- ``inference``: model-wide inference modes (gating, all experts on every rank for decoding).

The names below are this package's API; import them from ``mt.models.moe``.
"""

from mt.models.moe.dispatch import Experts, lazy_experts, pad_segments
from mt.models.moe.inference import local_experts, set_inference_gating
from mt.models.moe.layers import CMRLayer, MoELayer, build_moe_ffn, moe_layers
from mt.models.moe.placement import Placement, expert_parallel_, permute_experts_, placement_order, read_placement
from mt.models.moe.routing import Routing, capacity_for, is_moe_layer, num_moe_layers, top2_route

__all__ = [
    "CMRLayer",
    "Experts",
    "MoELayer",
    "Placement",
    "Routing",
    "build_moe_ffn",
    "capacity_for",
    "expert_parallel_",
    "is_moe_layer",
    "lazy_experts",
    "local_experts",
    "moe_layers",
    "num_moe_layers",
    "pad_segments",
    "permute_experts_",
    "placement_order",
    "read_placement",
    "set_inference_gating",
    "top2_route",
]
