"""The dense FFN sub-layer, and the contract every FFN sub-layer follows (dense or sparse MoE).

Each encoder/decoder layer calls ``build_ffn(cfg, layer_idx, is_decoder)`` (``mt.models.transformer``) and later
``ffn(x, ctx)`` on the layer-normed hidden states; the layer owns the LayerNorm, the residual and the
output dropout. That is the one seam a sparse MoE layer plugs into: it returns a module with the same
``forward(x, ctx)`` for the layers it wants (e.g. every other one), reads ``ctx.padding_mask(is_decoder)``
and ``ctx.lang(is_decoder)``, and writes its balance loss with ``ctx.add_aux_loss`` and routing stats into
``ctx.stats``. The training loop and the criterion need no change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mt.models.config import ForwardContext
from mt.models.dropout import dropout


class FeedForward(nn.Module):
    """fc1 -> ReLU -> activation dropout -> fc2 (NLLB's dense FFN)."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = activation_dropout
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.xavier_uniform_(self.fc2.weight)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        if self.activation_dropout > 0:
            h = dropout(h, self.activation_dropout, self.training)
        return self.fc2(h)
