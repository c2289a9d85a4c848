"""Hugging Face folders of the dense NLLB-200 models (``model_type`` m2m_100), as published.

``config.json``; weights in ``model.safetensors`` or ``pytorch_model.bin``, or their shards with an
``*.index.json``; the tokenizer: ``sentencepiece.bpe.model`` plus ``tokenizer.json`` /
``tokenizer_config.json`` / ``special_tokens_map.json`` (language codes and their ids, ``legacy_behaviour``).

What M2M100ForConditionalGeneration computes, checked against our Transformer (transformers'
modeling_m2m_100.py): pre-LN layers with a final LayerNorm per stack, ReLU FFNs, no layernorm_embedding;
embeddings scaled by sqrt(d_model) (``scale_embedding``); sinusoidal positions (half sin, half cos) that
start at ``padding_idx + 1`` (its ``offset`` 2 with pad 1), padding positions excluded; attention scaled
by head_dim ** -0.5 with biased q/k/v/out projections; one embedding shared by encoder, decoder and
``lm_head`` (no output bias). The config fields that would change any of this are refused when they
differ from those values. Generation starts from ``decoder_start_token_id`` (``</s>``) and forces the
target-language token next (``forced_bos_token_id``): our ``decoder_start = "eos_lang"``.

NLLB-MoE (``model_type`` nllb-moe, transformers' modeling_nllb_moe.py): the same Transformer with every
``encoder_sparse_step``-th encoder layer and ``decoder_sparse_step``-th decoder layer sparse (layer i when
``(i + 1) % step == 0``, our ``moe_freq``; the two steps must be equal), an ``NllbMoeSparseMLP`` of
``num_experts`` experts with a bias-free fp32 router (``NllbMoeTop2Router``): top-2 with
``second_expert_policy``, combine weights normalised before or after capacity dropping
(``normalize_router_prob_before_dropping``), capacity claimed in token order or by probability
(``batch_prioritized_routing``), eval capacity ``ceil(moe_eval_capacity_token_fraction * tokens)``, and
EOM (``moe_token_dropout``) whose outputs are scaled by (1 - p) at inference: each maps to our MoE layer's
option of the same meaning (our inference is deterministic: with ``second_expert_policy`` sampling HF adds
Gumbel noise at eval too; the released model uses ``all``; ``router_dtype`` does not matter, our router
computes in float32). HF names it ``ffn.router.classifier`` / ``ffn.experts.expert_{e}.fc1`` /
``ffn.fc1``, ``cross_attention``, ``ff_layer_norm`` (``MOE_RENAMES``). Not ours to copy: HF's
``NllbMoeSparseMLP.forward`` passes the one-hot top-1 mask where ``NllbMoeExperts`` expects expert indices,
so its experts run on the wrong tokens; we route as the router (and fairseq) decide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mt.common.errors import UserError
from mt.importing import vocab
from mt.importing.convert import Imported, Naming, embed_key
from mt.importing.weights import open_safetensors, open_torch_bin
from mt.models.config import TransformerConfig

EMBED_KEYS = (
    "model.shared.weight",
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
)
IGNORE = ("embed_positions.weights", "embed_positions._float_tensor")  # sinusoid tables some versions saved
# M2M100Config's defaults, for keys a config.json leaves out
DEFAULTS: dict[str, Any] = {
    "vocab_size": 128112,
    "max_position_embeddings": 1024,
    "encoder_layers": 12,
    "encoder_ffn_dim": 4096,
    "encoder_attention_heads": 16,
    "decoder_layers": 12,
    "decoder_ffn_dim": 4096,
    "decoder_attention_heads": 16,
    "activation_function": "relu",
    "d_model": 1024,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "decoder_start_token_id": 2,
    "scale_embedding": True,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "tie_word_embeddings": True,
}
# NllbMoeConfig's defaults besides those (the released nllb-moe-54b: 128 experts in every 4th layer)
MOE_DEFAULTS: dict[str, Any] = {
    "num_experts": 128,
    "encoder_sparse_step": 4,
    "decoder_sparse_step": 4,
    "router_bias": False,
    "second_expert_policy": "all",
    "normalize_router_prob_before_dropping": False,
    "batch_prioritized_routing": False,
    "moe_eval_capacity_token_fraction": 1.0,
    "moe_token_dropout": 0.2,
}
# fairseq-style names (the plan's) -> HF NLLB-MoE's, after "model."
MOE_RENAMES = (
    (r"\.moe_layer\.experts\.(\d+)\.", r".ffn.experts.expert_\1."),
    (r"\.moe_layer\.gate\.wg\.", ".ffn.router.classifier."),
    (r"(layers\.\d+)\.fc([12])\.", r"\1.ffn.fc\2."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attention_layer_norm."),
    (r"\.encoder_attn\.", ".cross_attention."),
    (r"\.final_layer_norm\.", ".ff_layer_norm."),
)
# what our Transformer computes: config values that must be so
REQUIRED: dict[str, Any] = {
    "activation_function": "relu",
    "scale_embedding": True,
    "tie_word_embeddings": True,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
}


def read(folder: Path, spm_model: Path | None = None) -> Imported:
    """Everything mt-import needs from an HF folder; nothing is read from the weights yet."""
    if not folder.is_dir():
        raise UserError(
            f"{folder}: not a folder; --format hf takes the model folder (config.json, "
            "model.safetensors, sentencepiece.bpe.model, tokenizer files)"
        )
    config_path = folder / "config.json"
    config = vocab.read_json(config_path)
    if not config:
        raise UserError(f"{config_path}: not found (or empty); --format hf takes a Hugging Face model folder")
    model_type = config.get("model_type")
    sparse = model_type in ("nllb-moe", "nllb_moe")
    if model_type != "m2m_100" and not sparse:
        raise UserError(
            f"{config_path}: model_type {model_type!r}; mt-import reads NLLB-200 / M2M-100 (m2m_100) "
            "and NLLB-MoE (nllb-moe)"
        )
    c = {**DEFAULTS, **(MOE_DEFAULTS if sparse else {}), **config}
    for key, want in {**REQUIRED, **({"router_bias": False} if sparse else {})}.items():
        got = c[key]
        if (got[0] if isinstance(got, list) and len(got) == 1 else got) != want:
            raise UserError(
                f"{config_path}: {key} is {got!r}; our Transformer computes {key}={want!r} "
                "(as every NLLB-200 model does)"
            )
    weights = open_safetensors(folder) or open_torch_bin(folder)
    if weights is None:
        raise UserError(f"{folder}: no weights (model.safetensors, pytorch_model.bin or a *.index.json with shards)")
    naming = Naming("model.", EMBED_KEYS, IGNORE, MOE_RENAMES if sparse else ())
    embed = embed_key(weights, naming, folder)
    rows = weights.shape(embed)[0]
    if rows != c["vocab_size"]:
        raise UserError(
            f"{weights.file_of(embed)}: {embed} has {rows} rows but config.json says vocab_size "
            f"{c['vocab_size']}; the weights belong to another model"
        )
    spm = spm_model or folder / "sentencepiece.bpe.model"
    dictionary = vocab.hf_dictionary(folder, spm, rows)
    tok_config = vocab.read_json(folder / "tokenizer_config.json")
    cfg = TransformerConfig(
        vocab_size=rows,
        padding_idx=1,
        encoder_layers=c["encoder_layers"],
        decoder_layers=c["decoder_layers"],
        encoder_embed_dim=c["d_model"],
        decoder_embed_dim=c["d_model"],
        encoder_ffn_embed_dim=c["encoder_ffn_dim"],
        decoder_ffn_embed_dim=c["decoder_ffn_dim"],
        encoder_attention_heads=c["encoder_attention_heads"],
        decoder_attention_heads=c["decoder_attention_heads"],
        dropout=float(c["dropout"]),
        attention_dropout=float(c["attention_dropout"]),
        activation_dropout=float(c["activation_dropout"]),
        max_source_positions=c["max_position_embeddings"],
        max_target_positions=c["max_position_embeddings"],
        langs=dictionary.langs(),
        source_langtok="last" if tok_config.get("legacy_behaviour") else "first",
        decoder_start="eos_lang",
        **(_moe_options(c, config_path) if sparse else {}),
    )
    cfg.validate()
    generation = vocab.read_json(folder / "generation_config.json")
    forced = config.get("forced_bos_token_id", generation.get("forced_bos_token_id"))
    meta = {
        "format": "hf",
        "source": str(folder.resolve()),
        "model_type": model_type,
        "default_tgt_lang": dictionary[forced] if isinstance(forced, int) and 0 <= forced < len(dictionary) else None,
    }
    inputs = {"SRC": folder, "--spm-model": spm, "weights": weights.file_of(embed)}
    return Imported(cfg, dictionary, spm, weights, naming, inputs, meta)


def _moe_options(c: dict[str, Any], config_path: Path) -> dict[str, Any]:
    """NLLB-MoE's router and expert settings as our ``TransformerConfig``'s MoE fields (see the docstring)."""
    enc, dec = int(c["encoder_sparse_step"]), int(c["decoder_sparse_step"])
    if enc != dec:
        raise UserError(
            f"{config_path}: encoder_sparse_step {enc} and decoder_sparse_step {dec} differ; our Transformer "
            "puts MoE layers at the same step in both stacks (--moe-freq), as NLLB-MoE does (4)"
        )
    if enc <= 0 or enc > max(c["encoder_layers"], c["decoder_layers"]):
        raise UserError(
            f"{config_path}: encoder_sparse_step {enc} with {c['encoder_layers']} layers: no layer is sparse; "
            "a dense model is model_type m2m_100"
        )
    policy = c["second_expert_policy"]
    if policy not in ("all", "sampling", "random"):
        raise UserError(f"{config_path}: second_expert_policy {policy!r}; our MoE layer knows all, sampling, random")
    return {
        "moe_freq": enc,
        "moe_expert_count": int(c["num_experts"]),
        "moe_second_expert_policy": policy,
        "moe_normalize_gate_prob_before_dropping": bool(c["normalize_router_prob_before_dropping"]),
        "moe_batch_prioritized_routing": bool(c["batch_prioritized_routing"]),
        "moe_eval_capacity_token_fraction": float(c["moe_eval_capacity_token_fraction"]),
        "moe_eom": float(c["moe_token_dropout"]),
    }
