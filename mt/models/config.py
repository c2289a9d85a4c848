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

from mt.common.errors import UserError


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
    # How sentences meet the model (``mt.data.rows``). The defaults are mt-train's; models imported with
    # mt-import carry their own (released NLLB-200 / M2M-100: decoder_start "eos_lang").
    source_langtok: str = "first"  # first: ``__src__ x </s>``; last: ``x </s> __src__`` (HF NLLB's legacy layout)
    decoder_start: str = "lang"  # lang: the decoder starts ``__tgt__``; eos_lang: ``</s> __tgt__`` (fairseq/HF NLLB)

    # Sparse MoE FFNs (``mt.models.moe``), fairseq's flag names. Layer i of a stack (0-based) is an MoE
    # layer when moe_freq > 0 and (i + 1) % moe_freq == 0 (fairseq / HF NLLB-MoE ``sparse_step``).
    moe_freq: int = 0
    moe_expert_count: int = 0
    moe_second_expert_policy: str = "sampling"  # sampling | all | random (GShard's second-expert policies)
    moe_normalize_gate_prob_before_dropping: bool = False
    moe_batch_prioritized_routing: bool = False  # capacity claimed by top-1 probability, not token order
    moe_train_capacity_factor: float = 1.0  # capacity = ceil(factor * 2 * tokens / experts)
    # which tokens the training capacity counts: "nonpad" ceil(factor * 2 * N / E) over the N routed tokens,
    # "fairseq" ceil(factor * 2 * ceil(S / E)) with S = all B x T positions, padding included (top2gating)
    moe_train_capacity_rule: str = "nonpad"
    moe_eval_capacity_token_fraction: float = 1.0  # capacity = ceil(fraction * tokens) at eval; <= 0: as training
    moe_eom: float = 0.0  # Expert Output Masking (Elbayad et al. 2023)
    moe_fom: float = 0.0  # Final Output Masking
    moe_cmr: bool = False  # Conditional MoE Routing: sigmoid gate between a dense FFN and the MoE
    cmr_gate_drop: float = 0.0
    cmr_gate_loss_p: float = 1.0  # target share of the CMR gate (budget loss; its weight is mt-train's)
    # Adapters (``mt.models.adapters``): per-language/per-pair bottleneck adapters, or hyper-adapters.
    lang_adapters: str = ""  # "" | "lang" | "pair"
    lang_adapter_bottleneck: int = 128
    adapter_lang_pairs: list[str] = field(default_factory=list)  # the pairs that get an adapter (pair mode)
    hyper_adapters: bool = False
    hyper_adapter_lang_dim: int = 50
    hyper_adapter_layer_dim: int = 50
    hyper_adapter_hidden_dim: int = 64
    hyper_adapter_bottleneck: int = 128
    hyper_adapter_no_rescale: bool = False

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
        if self.source_langtok not in ("first", "last"):
            raise UserError(f"model option source_langtok must be first or last, got {self.source_langtok!r}")
        if self.decoder_start not in ("lang", "eos_lang"):
            raise UserError(f"model option decoder_start must be lang or eos_lang, got {self.decoder_start!r}")
        self._validate_moe_and_adapters()
        return self

    def _validate_moe_and_adapters(self) -> None:
        if self.moe_freq < 0:
            raise UserError(f"--moe-freq must be >= 0 (0 = no MoE layers), got {self.moe_freq}")
        if self.moe_freq > 0:
            if self.moe_expert_count < 2:
                raise UserError(
                    f"--moe-freq {self.moe_freq} needs --moe-expert-count >= 2 (top-2 gating), "
                    f"got {self.moe_expert_count}"
                )
            if self.moe_freq > max(self.encoder_layers, self.decoder_layers):
                raise UserError(
                    f"--moe-freq {self.moe_freq} is larger than the number of layers: no layer would be MoE"
                )
        elif self.moe_expert_count or self.moe_cmr or self.moe_eom or self.moe_fom:
            raise UserError(
                "--moe-expert-count / --moe-eom / --moe-fom / --moe-cmr need --moe-freq N (every N-th layer is MoE)"
            )
        if self.moe_second_expert_policy not in ("sampling", "all", "random"):
            raise UserError(
                f"--moe-second-expert-policy must be sampling, all or random, got {self.moe_second_expert_policy!r}"
            )
        for name in ("moe_eom", "moe_fom", "cmr_gate_drop"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UserError(f"--{name.replace('_', '-')} is a probability in [0, 1), got {v}")
        if self.moe_train_capacity_factor <= 0:
            raise UserError(f"--moe-train-capacity-factor must be > 0, got {self.moe_train_capacity_factor}")
        if self.moe_train_capacity_rule not in ("nonpad", "fairseq"):
            raise UserError(
                f"--moe-train-capacity-rule must be nonpad or fairseq, got {self.moe_train_capacity_rule!r}"
            )
        if self.cmr_gate_loss_p != 1.0 and not self.moe_cmr:
            raise UserError("--cmr-gate-loss-p needs --moe-cmr: the budget loss acts on the CMR gate")
        if not 0.0 <= self.cmr_gate_loss_p <= 1.0:
            raise UserError(
                f"--cmr-gate-loss-p is the share of tokens for the experts, in [0, 1]; got {self.cmr_gate_loss_p}"
            )
        if self.lang_adapters not in ("", "lang", "pair"):
            raise UserError(f"--lang-adapters must be lang or pair, got {self.lang_adapters!r}")
        if self.lang_adapters and self.hyper_adapters:
            raise UserError("--lang-adapters and --hyper-adapters are alternatives: pick one")
        if (self.lang_adapters or self.hyper_adapters) and not self.langs:
            raise UserError(
                "adapters need the language list (TransformerConfig.langs): is dict.txt missing __xxx_Yyyy__ tokens?"
            )
        if self.lang_adapters == "pair" and not self.adapter_lang_pairs:
            raise UserError("--lang-adapters pair needs the language pairs (adapter_lang_pairs)")
        dims = [("lang_adapter_bottleneck", self.lang_adapter_bottleneck)] if self.lang_adapters else []
        if self.hyper_adapters:
            dims += [
                (n, getattr(self, n))
                for n in (
                    "hyper_adapter_lang_dim",
                    "hyper_adapter_layer_dim",
                    "hyper_adapter_hidden_dim",
                    "hyper_adapter_bottleneck",
                )
            ]
        for name, v in dims:
            if v < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {v}")

    # Fields that define the network's shape: a checkpoint whose values differ cannot be loaded.
    SHAPE_FIELDS = (
        "vocab_size",
        "encoder_layers",
        "encoder_embed_dim",
        "encoder_ffn_embed_dim",
        "encoder_attention_heads",
        "decoder_layers",
        "decoder_embed_dim",
        "decoder_ffn_embed_dim",
        "decoder_attention_heads",
        "moe_freq",
        "moe_expert_count",
        "moe_cmr",
    )
    # ... and those of the adapters: must match on resume; a --finetune-from-model base may lack adapters.
    ADAPTER_SHAPE_FIELDS = (
        "lang_adapters",
        "lang_adapter_bottleneck",
        "hyper_adapters",
        "hyper_adapter_lang_dim",
        "hyper_adapter_layer_dim",
        "hyper_adapter_hidden_dim",
        "hyper_adapter_bottleneck",
        "hyper_adapter_no_rescale",
    )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        """Tolerant of keys added by later versions (ignored) and of missing keys (defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _preset(layers: int, dim: int, ffn: int, heads: int, **extra: Any) -> dict[str, Any]:
    return dict(
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_embed_dim=dim,
        decoder_embed_dim=dim,
        encoder_ffn_embed_dim=ffn,
        decoder_ffn_embed_dim=ffn,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        **extra,
    )


ARCHS: dict[str, dict[str, Any]] = {
    # for tests and smoke runs: trains in seconds on a laptop CPU
    "transformer_tiny": _preset(2, 64, 128, 4, dropout=0.1),
    # the 2-core demo's model: a CPU run of less than one epoch is compute-bound, not data-bound, so it
    # is small (~4x cheaper per token than transformer_small, which it out-learns per CPU-minute) and
    # unregularised (no dropout; the MoE layers keep EOM)
    "transformer_mini": _preset(3, 128, 512, 4, dropout=0.0),
    # a laptop-sized multilingual model
    "transformer_small": _preset(3, 256, 1024, 4, dropout=0.1),
    # Vaswani et al. base (fairseq `transformer`), pre-LN
    "transformer_base": _preset(6, 512, 2048, 8, dropout=0.1),
    # NLLB-200 dense 600M (distilled model's shape): 12+12 layers, d 1024, ffn 4096, 16 heads
    "nllb_dense_600m": _preset(12, 1024, 4096, 16, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0),
}

# MoE / adapter fields set by mt-train's flags of the same names (``mt.train.moe_flags``)
EXTENSION_FIELDS = tuple(
    f.name for f in fields(TransformerConfig) if f.name.startswith(("moe_", "cmr_", "lang_adapter", "hyper_adapter"))
)

# names of the fairseq flags that override a preset (argparse dest form)
OVERRIDABLE = (
    "encoder_layers",
    "encoder_embed_dim",
    "encoder_ffn_embed_dim",
    "encoder_attention_heads",
    "decoder_layers",
    "decoder_embed_dim",
    "decoder_ffn_embed_dim",
    "decoder_attention_heads",
    "dropout",
    "attention_dropout",
    "activation_dropout",
)


def preset_values(archs: dict[str, dict[str, Any]], arch: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The field values of preset ``arch`` of ``archs`` with ``overrides`` applied (None values are ignored:
    flags the user did not give). Shared by the MT and the LASER model presets."""
    if arch not in archs:
        raise UserError(f"unknown --arch {arch!r}; choose from {', '.join(archs)}")
    return {**archs[arch], **{k: v for k, v in overrides.items() if v is not None}}


def arch_config(arch: str, **overrides: Any) -> TransformerConfig:
    """The preset ``arch`` with ``overrides`` (None values are ignored) applied."""
    return TransformerConfig(**preset_values(ARCHS, arch, overrides))


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
    budgets: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # see add_budget_loss

    def padding_mask(self, is_decoder: bool) -> torch.Tensor | None:
        return self.tgt_pad_mask if is_decoder else self.src_pad_mask

    def lang(self, is_decoder: bool) -> torch.Tensor | None:
        """The language a stack works in: source language in the encoder, target in the decoder."""
        return self.tgt_lang if is_decoder else self.src_lang

    def add_aux_loss(self, name: str, value: torch.Tensor) -> None:
        self.aux_losses[name] = self.aux_losses[name] + value if name in self.aux_losses else value

    def add_budget_loss(self, name: str, used: torch.Tensor, total: torch.Tensor, target: float) -> None:
        """Aux loss ``|sum used / sum total - target|`` pooled over every layer that adds to ``name``.

        fairseq's CMR budget loss sums the gate values (``used``) and token counts (``total``) of all CMR
        layers of a forward before taking the ratio (a mean of per-layer losses would weigh the layers
        equally, and not let layers on both sides of the target cancel). Each call recomputes the loss
        from the running sums.
        """
        if name in self.budgets:
            u0, t0 = self.budgets[name]
            used, total = u0 + used, t0 + total
        self.budgets[name] = (used, total)
        self.aux_losses[name] = (used / total.clamp_min(1e-5) - target).abs()

    def add_stat(self, name: str, total: torch.Tensor, count: torch.Tensor | float) -> None:
        """Accumulate a logged statistic as (sum, count) so averages stay exact across micro-batches/ranks.

        ``total`` and ``count`` are detached scalars or same-shape vectors; the trainer sums them over an
        update (and all ranks) and logs ``total / count``. Names ending in ``@src_lang`` / ``@tgt_lang`` are
        vectors indexed like ``TransformerConfig.langs`` and are logged per language. A module that adds a
        stat must add it on every training forward (even with zero counts): ranks reduce them together.
        """
        total = total.detach().double()
        count = torch.as_tensor(count, dtype=torch.float64, device=total.device).detach()
        if name in self.stats:
            t0, c0 = self.stats[name]
            total, count = t0 + total, c0 + count
        self.stats[name] = (total, count)
