"""Model configuration: one plain dataclass, named presets, and the per-forward context object.

Why a per-forward ``ForwardContext``: sub-layers that arrive later (sparse MoE FFNs with a balance loss
and per-language routing stats, hyper-adapters that need language ids and the layer index) read what they
need from it and write aux losses / stats into it, so neither the model's call signature nor the
training loop changes when they are added. The criterion adds every ``ctx.aux_losses`` entry (weighted)
to the label-smoothed cross entropy and logs each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from mt.errors import UserError


@dataclass
class TransformerConfig:
    """Pre-LayerNorm encoder-decoder with tied (joined-dictionary) embeddings, fairseq's flag names."""

    vocab_size: int = 0
    padding_idx: int = 1
    encoder_layers: int = 6
    encoder_embed_dim: int = 512
    encoder_ffn_embed_dim: int = 2048
    encoder_attention_heads: int = 8
    decoder_layers: int = 6
    decoder_embed_dim: int = 512
    decoder_ffn_embed_dim: int = 2048
    decoder_attention_heads: int = 8
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_source_positions: int = 512
    max_target_positions: int = 512
    # Language codes in dictionary order; ``ForwardContext.src_lang/tgt_lang`` are indices into this list
    # (hyper-adapters and per-language MoE stats size their tables with it).
    langs: list[str] = field(default_factory=list)

    def validate(self) -> "TransformerConfig":
        if self.encoder_embed_dim != self.decoder_embed_dim:
            raise UserError(
                f"--encoder-embed-dim {self.encoder_embed_dim} and --decoder-embed-dim {self.decoder_embed_dim} "
                "differ: embeddings are shared between encoder, decoder and output, so set them equal"
            )
        for side in ("encoder", "decoder"):
            d, h = getattr(self, f"{side}_embed_dim"), getattr(self, f"{side}_attention_heads")
            if h <= 0 or d % h:
                raise UserError(f"--{side}-embed-dim {d} is not divisible by --{side}-attention-heads {h}")
            if getattr(self, f"{side}_layers") < 1:
                raise UserError(f"--{side}-layers must be at least 1")
        if self.vocab_size <= self.padding_idx:
            raise UserError(f"vocabulary size {self.vocab_size} is too small: is dict.txt empty?")
        return self

    # Fields that define the network's shape: a checkpoint whose values differ cannot be loaded.
    SHAPE_FIELDS = (
        "vocab_size", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
        "decoder_layers", "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_attention_heads",
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        """Tolerant of keys added by later versions (ignored) and of missing keys (defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _preset(layers: int, dim: int, ffn: int, heads: int, **extra: Any) -> dict[str, Any]:
    return dict(
        encoder_layers=layers, decoder_layers=layers, encoder_embed_dim=dim, decoder_embed_dim=dim,
        encoder_ffn_embed_dim=ffn, decoder_ffn_embed_dim=ffn, encoder_attention_heads=heads,
        decoder_attention_heads=heads, **extra,
    )  # fmt: skip


ARCHS: dict[str, dict[str, Any]] = {
    # for tests and smoke runs: trains in seconds on a laptop CPU
    "transformer_tiny": _preset(2, 64, 128, 4, dropout=0.1),
    # a laptop-sized multilingual model
    "transformer_small": _preset(3, 256, 1024, 4, dropout=0.1),
    # Vaswani et al. base (fairseq `transformer`), pre-LN
    "transformer_base": _preset(6, 512, 2048, 8, dropout=0.1),
    # NLLB-200 dense 600M (distilled model's shape): 12+12 layers, d 1024, ffn 4096, 16 heads
    "nllb_dense_600m": _preset(12, 1024, 4096, 16, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0),
}

# names of the fairseq flags that override a preset (argparse dest form)
OVERRIDABLE = (
    "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
    "decoder_layers", "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_attention_heads",
    "dropout", "attention_dropout", "activation_dropout",
)  # fmt: skip


def arch_config(arch: str, **overrides: Any) -> TransformerConfig:
    """The preset ``arch`` with ``overrides`` (None values are ignored) applied."""
    if arch not in ARCHS:
        raise UserError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
    values = dict(ARCHS[arch])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TransformerConfig(**values)


@dataclass
class ForwardContext:
    """What one forward pass knows beyond the hidden states; sub-layers read it and write into it.

    ``src_lang``/``tgt_lang``: (B,) long tensors, indices into ``TransformerConfig.langs``.
    Padding masks are True at padding positions (right padding, see ``mt.data.pair_dataset``).
    During incremental decoding ``tgt_pad_mask`` covers only the new positions (usually None).
    ``aux_losses``: name -> scalar tensor; sub-layers add to them with ``add_aux_loss`` (summed over
    layers). ``stats``: free-form per-forward statistics (e.g. expert load per language) for logging.
    """

    src_lang: torch.Tensor | None = None
    tgt_lang: torch.Tensor | None = None
    src_pad_mask: torch.Tensor | None = None
    tgt_pad_mask: torch.Tensor | None = None
    incremental: bool = False
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def padding_mask(self, is_decoder: bool) -> torch.Tensor | None:
        return self.tgt_pad_mask if is_decoder else self.src_pad_mask

    def lang(self, is_decoder: bool) -> torch.Tensor | None:
        """The language a stack works in: source language in the encoder, target in the decoder."""
        return self.tgt_lang if is_decoder else self.src_lang

    def add_aux_loss(self, name: str, value: torch.Tensor) -> None:
        self.aux_losses[name] = self.aux_losses[name] + value if name in self.aux_losses else value
