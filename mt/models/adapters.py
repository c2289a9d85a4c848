"""Per-layer adapter hook: ``build_adapter(cfg, layer_idx, is_decoder)``, a no-op (None) by default.

Each layer applies ``x = adapter(x, ctx)`` after its FFN block when the factory returns a module. An
adapter owns its own residual connection (Houlsby/Bapna-style adapters and hyper-adapters are residual
bottlenecks); it gets the layer index at build time and the source/target language ids per sentence from
``ctx.src_lang`` / ``ctx.tgt_lang`` (``ctx.lang(is_decoder)`` picks the stack's language).
"""

from __future__ import annotations

from torch import nn

from mt.models.config import TransformerConfig


def build_adapter(cfg: TransformerConfig, layer_idx: int, is_decoder: bool) -> nn.Module | None:
    """No adapters in the dense baseline; hyper-adapters return a module here."""
    return None
