"""``mt-train``'s command line: flags generated from ``TrainConfig`` and ``ModelFlags``, then ``train(cfg)``."""

from __future__ import annotations

import argparse

from mt.common.errors import cli_entry
from mt.common.flags import add_flags, from_args
from mt.common.threads import configure_threads
from mt.models.config import OVERRIDABLE
from mt.train import moe_flags
from mt.train.moe_flags import ModelFlags
from mt.train.trainer import TrainConfig, train

EPILOG = """examples:
  # tiny smoke run on a laptop (data from mt-preprocess)
  mt-train work/demo/bin --lang-pairs eng_Latn-deu_Latn,deu_Latn-eng_Latn --arch transformer_tiny \\
      --max-tokens 2048 --max-update 200 --save-dir work/demo/ckpt

  # multilingual, temperature sampling, low-resource pairs joining at update 2000, chrF++ on 100 valid
  # sentences per direction, bf16 autocast
  mt-train work/bin --lang-pairs eng_Latn-deu_Latn,eng_Latn-fuv_Latn,fuv_Latn-eng_Latn \\
      --arch transformer_small --sampling-temperature 5 --curriculum curriculum.tsv \\
      --lr 0.001 --warmup-updates 1000 --label-smoothing 0.1 --max-tokens 4096 --update-freq 2 \\
      --max-update 20000 --save-interval-updates 1000 --validate-interval-updates 1000 \\
      --eval-chrf 100 --best-checkpoint-metric chrf --bf16 --save-dir work/ckpt

  # UniMax: an equal share of the budget (20000 updates x 4096 tokens) per direction, at most 5 epochs of
  # any one; a loss spike rolls back to the checkpoint >= 200 updates older and skips the next 100 batches
  mt-train work/bin --lang-pairs ... --sampling-method unimax --unimax-max-epochs 5 --max-update 20000 \\
      --save-interval-updates 100 --spike-rollback 200 --spike-skip 100 --save-dir work/ckpt
  # UtiliMax with utilities from short ablation runs (mt-eval utilities; recipes/ablations.sh mixing)
  mt-train work/bin --lang-pairs ... --sampling-method utilimax --utilities utilities.tsv --max-update 20000 ...

  # data parallel: 4 processes (gloo on CPU, nccl on GPUs); the global batch is the same as 1 process
  torchrun --standalone --nproc_per_node 4 --no-python mt-train work/bin --lang-pairs ... --save-dir work/ckpt
  # (or: torchrun --standalone --nproc_per_node 4 -m mt.train work/bin ...; multi-node: --nnodes/--rdzv-endpoint)

Re-running the same command resumes from {save-dir}/checkpoint_last.pt (exactly, even after a kill).
Outputs: {save-dir}/checkpoint_last.pt, checkpoint_best.pt, checkpoint<epoch>.pt, train_log.jsonl.
Curriculum file: one 'pair<TAB>start_update' per line; unlisted pairs start at update 0.
Train records of train_log.jsonl carry per-parameter-group Adam statistics ('stability'; mt-eval report plots
them); spikes and rollbacks are logged as 'spike' / 'rollback' records.
Losses are logged in base 2 per target token (as fairseq); ppl = 2 ** nll_loss."""

_FIRST = ("data", "lang_pairs", "save_dir", "arch")  # before the preset overrides, as in fairseq
_MOE_TRAINING = ("moe_gate_loss_wt", "moe_z_loss_wt", "cmr_gate_loss_wt", "freeze_base")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-train",
        description="Train a multilingual Transformer (NLLB recipe) on mt-preprocess output.",
        epilog=EPILOG + moe_flags.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(p, TrainConfig, only=_FIRST)
    add_flags(p, ModelFlags, only=OVERRIDABLE)
    add_flags(p, TrainConfig, exclude=(*_FIRST, *_MOE_TRAINING))
    add_flags(p, ModelFlags, exclude=OVERRIDABLE)
    add_flags(p, TrainConfig, only=_MOE_TRAINING)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = moe_flags.model_overrides(from_args(ModelFlags, args), args.cmr_gate_loss_wt)
    return from_args(TrainConfig, args, model_overrides=overrides)


@cli_entry
def train_main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(build_parser().parse_args(argv))
    configure_threads(cfg.threads, "mt-train")
    summary = train(cfg)
    return 143 if summary.get("stopped") else 0
