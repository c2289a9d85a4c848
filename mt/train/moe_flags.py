"""mt-train's model flags: preset overrides, sparse MoE and adapters (fairseq's names where fairseq had them).

They are the fields of ``ModelFlags`` and land in ``TrainConfig.model_overrides`` under their
``TransformerConfig`` field names (``OVERRIDABLE`` and ``EXTENSION_FIELDS``, saved with every checkpoint so the
model can be rebuilt), only when given: unset, the preset's or the starting checkpoint's value holds.
Training-side MoE flags (loss weights, ``--freeze-base``) are ``TrainConfig`` fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mt.common.errors import UserError
from mt.common.flags import arg
from mt.models.config import TransformerConfig

EPILOG = """

sparse MoE and adapters:
  # sparse MoE (NLLB-200 recipe): 8 experts in every 2nd layer, top-2 gating, balance loss 0.01,
  # Expert Output Masking 0.2; under torchrun each of the 4 ranks holds 2 experts (expert parallelism)
  torchrun --standalone --nproc_per_node 4 --no-python mt-train work/bin --lang-pairs ... \\
      --arch transformer_small --moe-freq 2 --moe-expert-count 8 --moe-gate-loss-wt 0.01 --moe-eom 0.2 \\
      --max-tokens 4096 --bf16 --save-dir work/moe
  # Conditional MoE Routing (dense FFN or experts per token) with gate dropout 0.2 and NLLB's budget loss
  # (about 80% of the tokens through the experts)
  mt-train work/bin --lang-pairs ... --moe-freq 2 --moe-expert-count 8 --moe-cmr --cmr-gate-drop 0.2 \\
      --cmr-gate-loss-wt 0.1 --cmr-gate-loss-p 0.8 ...
  # add languages to a trained model: train only hyper-adapters on top of frozen weights
  mt-train work/bin --lang-pairs eng_Latn-fuv_Latn,fuv_Latn-eng_Latn --arch transformer_small \\
      --hyper-adapters --freeze-base --finetune-from-model work/ckpt/checkpoint_best.pt --save-dir work/ha

MoE checkpoints: with W ranks, checkpoint_last.pt holds the shared weights and checkpoint_last-rank-{r}.pt
the experts of rank r; any world size that divides --moe-expert-count resumes them (re-sharded on load).
Logged per MoE layer in train_log.jsonl ("moe"): expert load, over-capacity share, balance loss; with
--moe-cmr the mean CMR gate per source / target language, and the budget loss ("aux": cmr_gate_loss)."""


_D = TransformerConfig()
_PRESET = "override the preset"
_MODEL, _MOE, _ADAPTERS = "model", "sparse mixture of experts (NLLB-200 MoE)", "adapters"


@dataclass
class ModelFlags:
    """Model settings a run may override; None = not given (the preset's or the checkpoint's value)."""

    encoder_layers: int | None = arg(None, _PRESET, group=_MODEL)
    encoder_embed_dim: int | None = arg(None, _PRESET, group=_MODEL)
    encoder_ffn_embed_dim: int | None = arg(None, _PRESET, group=_MODEL)
    encoder_attention_heads: int | None = arg(None, _PRESET, group=_MODEL)
    decoder_layers: int | None = arg(None, _PRESET, group=_MODEL)
    decoder_embed_dim: int | None = arg(None, _PRESET, group=_MODEL)
    decoder_ffn_embed_dim: int | None = arg(None, _PRESET, group=_MODEL)
    decoder_attention_heads: int | None = arg(None, _PRESET, group=_MODEL)
    dropout: float | None = arg(None, _PRESET, group=_MODEL)
    attention_dropout: float | None = arg(None, _PRESET, group=_MODEL)
    activation_dropout: float | None = arg(None, _PRESET, group=_MODEL)
    # sparse mixture of experts
    moe_freq: int | None = arg(
        None,
        "every N-th layer of each stack is a sparse MoE layer (layer i when (i+1) %% N == 0; default: dense)",
        metavar="N",
        group=_MOE,
    )
    moe_expert_count: int | None = arg(None, "experts per MoE layer (top-2 gating)", metavar="E", group=_MOE)
    moe_second_expert_policy: str | None = arg(
        None,
        f"how the second expert is chosen in training (default: {_D.moe_second_expert_policy})",
        choices=["sampling", "all", "random"],
        group=_MOE,
    )
    moe_normalize_gate_prob_before_dropping: bool | None = arg(
        None, "normalise the two gate probabilities before over-capacity dropping (default: after)", group=_MOE
    )
    moe_batch_prioritized_routing: bool | None = arg(
        None,
        "over-capacity dropping keeps the tokens with the highest top-1 gate probability first "
        "instead of the first tokens of the batch (default: token order)",
        group=_MOE,
    )
    moe_train_capacity_factor: float | None = arg(
        None,
        "expert capacity in training = factor * 2 * tokens / experts (which tokens: --moe-train-capacity-rule; "
        f"default: {_D.moe_train_capacity_factor})",
        group=_MOE,
    )
    moe_train_capacity_rule: str | None = arg(
        None,
        "which tokens the training capacity counts: nonpad = ceil(factor * 2 * N / E) over the N "
        "non-padding tokens; fairseq = ceil(factor * 2 * ceil(S / E)) over all S = B x T positions, "
        "padding included (fairseq's top2gating, 2 * ceil(S / E); the largest rank's S under torchrun), "
        "to compare runs with the reference. Default nonpad: padding is never routed, so counting it "
        "gives batches with more padding more room, and the share of tokens dropped would depend on "
        f"how the batch was padded (default: {_D.moe_train_capacity_rule})",
        choices=["nonpad", "fairseq"],
        group=_MOE,
    )
    moe_eval_capacity_token_fraction: float | None = arg(
        None,
        "expert capacity at eval with static gating (mt-generate --moe-inference-gating static) "
        "as a fraction of the tokens; <= 0: as in training (default: "
        f"{_D.moe_eval_capacity_token_fraction}, nothing dropped; dynamic gating, the default, has no capacity)",
        group=_MOE,
    )
    moe_eom: float | None = arg(
        None,
        "Expert Output Masking: drop each (token, expert) output with probability P in training",
        metavar="P",
        group=_MOE,
    )
    moe_fom: float | None = arg(
        None,
        "Final Output Masking: drop a token's whole MoE-layer output with probability P in training",
        metavar="P",
        group=_MOE,
    )
    moe_cmr: bool | None = arg(
        None, "Conditional MoE Routing: a per-token gate blends a dense FFN and the experts", group=_MOE
    )
    cmr_gate_drop: float | None = arg(
        None,
        "CMR gate dropout: with probability P a token uses the dense FFN only (training)",
        metavar="P",
        group=_MOE,
    )
    cmr_gate_loss_p: float | None = arg(
        None,
        "share of tokens the CMR budget loss steers through the experts. NLLB's CMR runs used "
        f"0.8 (default: {_D.cmr_gate_loss_p}, fairseq's)",
        metavar="P",
        group=_MOE,
    )
    # adapters
    lang_adapters: str | None = arg(
        None,
        "bottleneck adapters per language (encoder: source, decoder: target) or per language pair",
        choices=["lang", "pair"],
        group=_ADAPTERS,
    )
    lang_adapter_bottleneck: int | None = arg(
        None, f"bottleneck size of --lang-adapters (default: {_D.lang_adapter_bottleneck})", group=_ADAPTERS
    )
    hyper_adapters: bool | None = arg(
        None, "adapters generated by one hyper-network from language-pair and layer embeddings", group=_ADAPTERS
    )
    hyper_adapter_lang_dim: int | None = arg(None, f"(default: {_D.hyper_adapter_lang_dim})", group=_ADAPTERS)
    hyper_adapter_layer_dim: int | None = arg(None, f"(default: {_D.hyper_adapter_layer_dim})", group=_ADAPTERS)
    hyper_adapter_hidden_dim: int | None = arg(None, f"(default: {_D.hyper_adapter_hidden_dim})", group=_ADAPTERS)
    hyper_adapter_bottleneck: int | None = arg(None, f"(default: {_D.hyper_adapter_bottleneck})", group=_ADAPTERS)
    hyper_adapter_no_rescale: bool | None = arg(
        None, "ablation: do not rescale the generated weights by 1/sqrt(fan-in)", group=_ADAPTERS
    )


def model_overrides(flags: ModelFlags, cmr_gate_loss_wt: float = 0.0) -> dict:
    """The model settings that were given (not None), by ``TransformerConfig`` field name."""
    out = {k: v for k, v in asdict(flags).items() if v is not None}
    if cmr_gate_loss_wt and not out.get("moe_cmr"):
        raise UserError("--cmr-gate-loss-wt needs --moe-cmr: the budget loss acts on the CMR gate")
    return out
