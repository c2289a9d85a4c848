"""mt-train's sparse-MoE and adapter flags (fairseq's names where fairseq had the feature).

Model-side flags land in ``TrainConfig.model_overrides`` under their ``TransformerConfig`` field names
(``EXTENSION_FIELDS``, saved with every checkpoint so the model can be rebuilt); training-side ones
(loss weights, ``--freeze-base``) are ``TrainConfig`` fields.
"""

from __future__ import annotations

import argparse

from mt.common.errors import UserError
from mt.models.config import EXTENSION_FIELDS, TransformerConfig

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TransformerConfig()
    g = p.add_argument_group("sparse mixture of experts (NLLB-200 MoE)")
    g.add_argument(
        "--moe-freq",
        type=int,
        default=None,
        metavar="N",
        help="every N-th layer of each stack is a sparse MoE layer (layer i when (i+1) %% N == 0; default: dense)",
    )
    g.add_argument(
        "--moe-expert-count", type=int, default=None, metavar="E", help="experts per MoE layer (top-2 gating)"
    )
    g.add_argument(
        "--moe-second-expert-policy",
        choices=["sampling", "all", "random"],
        default=None,
        help=f"how the second expert is chosen in training (default: {d.moe_second_expert_policy})",
    )
    g.add_argument(
        "--moe-normalize-gate-prob-before-dropping",
        action="store_true",
        default=None,
        help="normalise the two gate probabilities before over-capacity dropping (default: after)",
    )
    g.add_argument(
        "--moe-batch-prioritized-routing",
        action="store_true",
        default=None,
        help="over-capacity dropping keeps the tokens with the highest top-1 gate probability first "
        "instead of the first tokens of the batch (default: token order)",
    )
    g.add_argument(
        "--moe-train-capacity-factor",
        type=float,
        default=None,
        help="expert capacity in training = factor * 2 * tokens / experts (which tokens: --moe-train-capacity-rule; "
        f"default: {d.moe_train_capacity_factor})",
    )
    g.add_argument(
        "--moe-train-capacity-rule",
        choices=["nonpad", "fairseq"],
        default=None,
        help="which tokens the training capacity counts: nonpad = ceil(factor * 2 * N / E) over the N "
        "non-padding tokens; fairseq = ceil(factor * 2 * ceil(S / E)) over all S = B x T positions, "
        "padding included (fairseq's top2gating, 2 * ceil(S / E); the largest rank's S under torchrun), "
        "to compare runs with the reference. Default nonpad: padding is never routed, so counting it "
        "gives batches with more padding more room, and the share of tokens dropped would depend on "
        f"how the batch was padded (default: {d.moe_train_capacity_rule})",
    )
    g.add_argument(
        "--moe-eval-capacity-token-fraction",
        type=float,
        default=None,
        help="expert capacity at eval with static gating (mt-generate --moe-inference-gating static) "
        "as a fraction of the tokens; <= 0: as in training (default: "
        f"{d.moe_eval_capacity_token_fraction}, nothing dropped; dynamic gating, the default, has no capacity)",
    )
    g.add_argument(
        "--moe-gate-loss-wt",
        type=float,
        default=0.01,
        help="weight of the load-balancing loss E * sum_e f_e * P_e (mean over MoE layers; default: %(default)s)",
    )
    g.add_argument(
        "--moe-z-loss-wt", type=float, default=0.0, help="weight of the router z-loss (default: %(default)s)"
    )
    g.add_argument(
        "--moe-eom",
        type=float,
        default=None,
        metavar="P",
        help="Expert Output Masking: drop each (token, expert) output with probability P in training",
    )
    g.add_argument(
        "--moe-fom",
        type=float,
        default=None,
        metavar="P",
        help="Final Output Masking: drop a token's whole MoE-layer output with probability P in training",
    )
    g.add_argument(
        "--moe-cmr",
        action="store_true",
        default=None,
        help="Conditional MoE Routing: a per-token gate blends a dense FFN and the experts",
    )
    g.add_argument(
        "--cmr-gate-drop",
        type=float,
        default=None,
        metavar="P",
        help="CMR gate dropout: with probability P a token uses the dense FFN only (training)",
    )
    g.add_argument(
        "--cmr-gate-loss-wt",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of the CMR budget loss |mean CMR gate - p| (mean over the tokens of all CMR "
        "layers, p = --cmr-gate-loss-p; fairseq's flag). NLLB's CMR runs used 0.1 "
        "(default: %(default)s, fairseq's: off)",
    )
    g.add_argument(
        "--cmr-gate-loss-p",
        type=float,
        default=None,
        metavar="P",
        help="share of tokens the CMR budget loss steers through the experts. NLLB's CMR runs used "
        f"0.8 (default: {d.cmr_gate_loss_p}, fairseq's)",
    )

    g = p.add_argument_group("adapters")
    g.add_argument(
        "--lang-adapters",
        choices=["lang", "pair"],
        default=None,
        help="bottleneck adapters per language (encoder: source, decoder: target) or per language pair",
    )
    g.add_argument(
        "--lang-adapter-bottleneck",
        type=int,
        default=None,
        help=f"bottleneck size of --lang-adapters (default: {d.lang_adapter_bottleneck})",
    )
    g.add_argument(
        "--hyper-adapters",
        action="store_true",
        default=None,
        help="adapters generated by one hyper-network from language-pair and layer embeddings",
    )
    g.add_argument("--hyper-adapter-lang-dim", type=int, default=None, help=f"(default: {d.hyper_adapter_lang_dim})")
    g.add_argument("--hyper-adapter-layer-dim", type=int, default=None, help=f"(default: {d.hyper_adapter_layer_dim})")
    g.add_argument(
        "--hyper-adapter-hidden-dim", type=int, default=None, help=f"(default: {d.hyper_adapter_hidden_dim})"
    )
    g.add_argument(
        "--hyper-adapter-bottleneck", type=int, default=None, help=f"(default: {d.hyper_adapter_bottleneck})"
    )
    g.add_argument(
        "--hyper-adapter-no-rescale",
        action="store_true",
        default=None,
        help="ablation: do not rescale the generated weights by 1/sqrt(fan-in)",
    )
    g.add_argument(
        "--freeze-base",
        action="store_true",
        help="train only the adapters (and hyper-network); with --finetune-from-model, to add languages",
    )


def pop_model_overrides(values: dict) -> dict:
    """Remove the model-side flags from parsed ``values``; return those that were given."""
    out = {}
    for name in EXTENSION_FIELDS:
        v = values.pop(name, None)
        if v is not None:
            out[name] = v
    if values.get("cmr_gate_loss_wt") and not out.get("moe_cmr"):
        raise UserError("--cmr-gate-loss-wt needs --moe-cmr: the budget loss acts on the CMR gate")
    return out
