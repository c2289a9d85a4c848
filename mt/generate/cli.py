"""Command lines of the generation room: flags generated from the config dataclasses -> one function call.

``mt-generate`` (binarized subset, fairseq output, chrF++), ``mt-interactive`` (stdin -> stdout),
``mt-translate`` (resumable, shardable batch job over files), ``mt-export`` (HF M2M100 / CTranslate2),
``mt-moe-stats`` and ``mt-moe-prune``. Flag names are fairseq's where fairseq had the feature. The decoding
commands share ``DecodeOptions`` (model, device, batching), ``SearchConfig`` and ``MoEInferenceConfig``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

import torch

from mt.common.errors import UserError, cli_entry
from mt.common.flags import ProgressOptions, add_flags, arg, from_args
from mt.common.threads import configure_threads
from mt.generate.batch_job import TranslateConfig, parse_shard, translate_job
from mt.generate.export import ExportConfig, export
from mt.generate.generate import GenerateConfig, generate
from mt.generate.interactive import InteractiveConfig, interactive
from mt.generate.moe_inference import MoEInferenceConfig
from mt.generate.moe_prune import PruneConfig, prune
from mt.generate.moe_stats import MoEStatsConfig, moe_stats
from mt.generate.quantize import QUANTIZATIONS
from mt.generate.search import SearchConfig

_FMT = argparse.RawDescriptionHelpFormatter
_MODEL, _SEARCH = "model", "search"


@dataclass
class DecodeOptions:
    """The model, device and batch options of every decoding command; the configs take them by name."""

    path: str = arg(
        "", "checkpoint of mt-train (e.g. ckpt/checkpoint_best.pt)", metavar="CKPT", required=True, group=_MODEL
    )
    data: str = arg(
        "",
        "directory with the dict.txt (+ spm.model) the model was trained with "
        "(default: next to the checkpoint, else the training data directory it records)",
        metavar="DIR",
        group=_MODEL,
    )
    spm_model: str = arg("", "SentencePiece model (default: DATA/spm.model)", metavar="FILE", group=_MODEL)
    device: str = arg(
        "auto", "auto (cuda if available), cpu, cuda, cuda:N (default: auto)", show_default=False, group=_MODEL
    )
    cpu: bool = arg(False, "same as --device cpu (fairseq's flag)", group=_MODEL)
    bf16: bool = arg(
        False,
        "bfloat16 matrix products (scores stay float32): about 2x faster on CPUs with AVX512-BF16/AMX, "
        "outputs can differ slightly from float32",
        group=_MODEL,
    )
    quantize: str = arg(
        "none",
        "int8: CPU decoding with int8 weights (a scale per row) and activations quantised per product in "
        "the attention, FFN, expert and output matrices (fbgemm); outputs can differ slightly from "
        "float32 (not with --bf16, CUDA or --expert-cache)",
        choices=list(QUANTIZATIONS),
        show_default=False,
        group=_MODEL,
    )
    threads: int = arg(
        0,
        "torch intra-op threads (default: every CPU this process may use, OpenMP waiting passively; said on "
        "stderr when that is fewer than the CPUs; OMP_NUM_THREADS also counts as a choice)",
        group=_MODEL,
    )
    max_tokens: int = arg(4096, "source tokens per batch", group=_SEARCH)
    batch_size: int = arg(
        0, "sentences per batch (default: no limit besides --max-tokens)", aliases=("--max-sentences",), group=_SEARCH
    )

    def resolved_device(self) -> str:
        if self.cpu or self.device == "cpu":
            return "cpu"
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {self.device}: CUDA is not available here; use --device cpu")
        return self.device

    def values_for(self, cls: type) -> dict[str, Any]:
        """These options under the names ``cls`` has (``device`` resolved; ``cpu`` is folded into it)."""
        names = {f.name for f in fields(cls)}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}
        values["device"] = self.resolved_device()
        return values


def _add_decoding(p: argparse.ArgumentParser, exclude: tuple[str, ...] = (), moe_first: bool = False) -> None:
    """The shared decoding flags in their groups: model, search (+ batch sizes), sparse MoE inference."""
    add_flags(p, DecodeOptions, exclude=(*exclude, "max_tokens", "batch_size"))
    if moe_first:
        _add_moe(p, parallel=False)
    add_flags(p, SearchConfig)
    add_flags(p, DecodeOptions, only=("max_tokens", "batch_size"))
    if not moe_first:
        _add_moe(p, parallel="expert_placement" not in exclude)


def _add_moe(p: argparse.ArgumentParser, parallel: bool) -> None:
    add_flags(p, MoEInferenceConfig, exclude=() if parallel else ("expert_placement",))


def _threads(args: argparse.Namespace, command: str) -> None:
    """CPU decoding: torch's threads from ``--threads``, else picked for the machine's load (``mt.common.threads``)."""
    decode = from_args(DecodeOptions, args)
    if decode.resolved_device() == "cpu":
        configure_threads(decode.threads, command)


def _decoding(args: argparse.Namespace, cls: type, **values: Any) -> Any:
    """``cls`` by keyword: its own flags, the shared decoding options, the search and MoE configs."""
    decode = from_args(DecodeOptions, args)
    search = from_args(SearchConfig, args).check()
    moe = from_args(MoEInferenceConfig, args).check()
    return from_args(cls, args, **{**decode.values_for(cls), "search": search, "moe": moe, **values})


# --- mt-generate ---------------------------------------------------------------------------------------
@dataclass
class Direction:
    """mt-generate's one direction, fairseq's way (``--lang-pairs`` gives several)."""

    source_lang: str = arg("", "source language code, e.g. eng_Latn", short="-s")
    target_lang: str = arg("", "target language code, e.g. deu_Latn", short="-t")

    def pairs(self, lang_pairs: list[str]) -> list[str]:
        if not (self.source_lang or self.target_lang):
            return lang_pairs
        if lang_pairs:
            raise UserError("give either -s/-t or --lang-pairs, not both")
        if not (self.source_lang and self.target_lang):
            raise UserError("-s/--source-lang and -t/--target-lang go together")
        return [f"{self.source_lang}-{self.target_lang}"]


GENERATE_EPILOG = """examples:
  # FLORES devtest eng->deu with beam 4, fairseq's output on stdout, chrF++ last
  mt-generate work/bin --path ckpt/checkpoint_best.pt --gen-subset devtest -s eng_Latn -t deu_Latn \\
      --beam 4 --lenpen 1.0 --remove-bpe sentencepiece
  # several directions; files for `mt-eval dir work/gen --ref-dir corpus/devtest`
  mt-generate work/bin --path ckpt/checkpoint_best.pt --gen-subset devtest \\
      --lang-pairs eng_Latn-deu_Latn,deu_Latn-eng_Latn --bf16 --results-path work/gen
  # best hypotheses in input order
  mt-generate work/bin --path ckpt/checkpoint_best.pt -s eng_Latn -t deu_Latn | grep ^D- | sort -V | cut -f3
  # fairseq's "BLEU4 = ..." last line, for scripts that parse it
  mt-generate work/bin --path ckpt/checkpoint_best.pt -s eng_Latn -t zho_Hans --scoring bleu | tail -n1

  # sparse MoE: the padded static-gating baseline; or 4 of 16 experts per layer resident (others memory-mapped)
  mt-generate work/bin --path moe/checkpoint_best.pt -s eng_Latn -t deu_Latn --moe-inference-gating static
  mt-generate work/bin --path moe/checkpoint_best.pt -s eng_Latn -t deu_Latn --expert-cache 4
  # expert-parallel inference over 2 processes, experts placed by mt-moe-stats --num-ranks 2
  torchrun --standalone --nproc_per_node 2 --no-python mt-generate work/bin --path moe/checkpoint_best.pt \\
      -s eng_Latn -t deu_Latn --expert-placement work/moe/placement.json

Output per sentence i (batch order, as fairseq): S-i source, T-i reference, H-i<TAB>score<TAB>pieces,
D-i<TAB>score<TAB>detokenised, P-i<TAB>per-token scores; scores are log2. Last line:
"Generate {subset} with beam=N: chrF2++ = ..." (--scoring chrf), or fairseq's "Generate {subset} with
beam=N: BLEU4 = 28.12, 59.0/34.2/21.6/14.1 (BP=1.000, ratio=1.000, syslen=..., reflen=...)" (--scoring
bleu; sacrebleu's BLEU on detokenised text, tokenised for the target language: zh for Chinese, ...; the
signature goes to stderr). --results-path DIR writes DIR/generate-{subset}.txt and DIR/{src}-{tgt}.hyp
(detokenised, input order).
"""


def build_generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-generate",
        description="Translate a binarized subset (fairseq-generate).",
        epilog=GENERATE_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, GenerateConfig, only=("data", "gen_subset"))
    add_flags(p, Direction)
    add_flags(p, GenerateConfig, exclude=("data", "gen_subset"))
    add_flags(p, ProgressOptions)
    _add_decoding(p, exclude=("data",))
    return p


@cli_entry
def generate_main(argv: list[str] | None = None) -> int:
    args = build_generate_parser().parse_args(argv)
    pairs = from_args(Direction, args).pairs(args.lang_pairs)
    _threads(args, "mt-generate")
    progress = not from_args(ProgressOptions, args).no_progress_bar
    generate(_decoding(args, GenerateConfig, lang_pairs=pairs, progress=progress))
    return 0


# --- mt-interactive ------------------------------------------------------------------------------------
@dataclass
class DataDir:
    data_dir: str = arg(
        "",
        "directory with the dict.txt (+ spm.model) the model was trained with, as fairseq-interactive "
        "takes it (same as --data; default: found from the checkpoint)",
        positional=True,
        metavar="DATA",
    )


INTERACTIVE_EPILOG = """examples:
  echo "The file is open." | mt-interactive --path ckpt/checkpoint_best.pt -s eng_Latn -t deu_Latn
  # fairseq-interactive's order: the data directory (dict.txt, spm.model) first
  mt-interactive work/bin --path ckpt/checkpoint_best.pt -s eng_Latn -t deu_Latn < in.txt
  mt-interactive --path ckpt/checkpoint_best.pt -s eng_Latn -t fra_Latn --buffer-size 64 --bf16 < in.txt > out.txt
  # fairseq-interactive's S-/W-/H-/D-/P- lines, 2 hypotheses each
  mt-interactive --path ckpt/checkpoint_best.pt -s eng_Latn -t deu_Latn --output-format fairseq --nbest 2

plain output: one translation per input line (empty or undecodable lines give empty lines); fairseq
output: S-/W-/H-/D-/P- lines for every input line (an empty hypothesis for those), so grep ^D- stays aligned.
"""


def build_interactive_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-interactive",
        description="Translate raw text from stdin as it arrives.",
        epilog=INTERACTIVE_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, DataDir)
    add_flags(p, InteractiveConfig)
    _add_decoding(p, exclude=("expert_placement",))
    return p


@cli_entry
def interactive_main(argv: list[str] | None = None) -> int:
    args = build_interactive_parser().parse_args(argv)
    data_dir = from_args(DataDir, args).data_dir
    if data_dir and args.data and data_dir != args.data:
        raise UserError(f"two data directories: DATA {data_dir} and --data {args.data}; give one")
    _threads(args, "mt-interactive")
    interactive(_decoding(args, InteractiveConfig, data=data_dir or args.data))
    return 0


# --- mt-translate --------------------------------------------------------------------------------------
@dataclass
class JobOptions:
    """mt-translate's sharding and merge switches (``TranslateConfig`` holds them as shard_index/num_shards/merge)."""

    shard: str = arg("0/1", "i/N: translate only chunks k with k %% N == i (0-based, default: 0/1)", show_default=False)
    no_merge: bool = arg(False, "leave the chunks unmerged")


TRANSLATE_EPILOG = """examples:
  # a text file into two languages; re-run the same command after a crash: finished chunks are kept
  mt-translate mono.eng_Latn.txt --path ckpt/checkpoint_best.pt -s eng_Latn -t fra_Latn,deu_Latn --out work/bt --bf16
  # a directory of JSONL files, the "text" field
  mt-translate data/jsonl/ --field text --path ckpt/checkpoint_best.pt -s eng_Latn -t swh_Latn --out work/swh
  # Parquet column, as a Slurm array of 8 jobs (each takes every 8th chunk; the last one merges)
  mt-translate corpus.parquet --column sentence --shard $SLURM_ARRAY_TASK_ID/8 --path ck.pt \\
      -s eng_Latn -t zul_Latn --out work/zul

Outputs: OUT/{tgt}/{input name} (one line per input record, in order; non-text inputs get .txt appended),
OUT/bad_lines.tsv (file, line, reason of every empty / invalid UTF-8 / too long / malformed record; they get
an empty translation, or the source with --bad-lines copy), OUT/chunks/ (finished chunks, the resume state).
"""


def build_translate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-translate",
        description="Resumable, shardable batch translation of files.",
        epilog=TRANSLATE_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, TranslateConfig)
    add_flags(p, JobOptions)
    add_flags(p, ProgressOptions)
    _add_decoding(p, exclude=("expert_placement",))
    return p


@cli_entry
def translate_main(argv: list[str] | None = None) -> int:
    args = build_translate_parser().parse_args(argv)
    job = from_args(JobOptions, args)
    i, n = parse_shard(job.shard)
    _threads(args, "mt-translate")
    progress = not from_args(ProgressOptions, args).no_progress_bar
    cfg = _decoding(args, TranslateConfig, shard_index=i, num_shards=n, progress=progress, merge=not job.no_merge)
    translate_job(cfg)
    return 0


# --- mt-export -----------------------------------------------------------------------------------------
EXPORT_EPILOG = """examples:
  mt-export --format hf --path ckpt/checkpoint_best.pt --out export/hf
  mt-export --format ctranslate2 --path ckpt/checkpoint_best.pt --out export/ct2
  mt-export --format ctranslate2 --quantization int8 --path ckpt/checkpoint_best.pt --out export/ct2-int8

The decoder of models mt-train wrote starts with the target-language token (not </s>): pass
decoder_start_token_id=<id of __deu_Latn__> to HF generate(), target_prefix=[["__deu_Latn__"]] to
CTranslate2; sources are "__eng_Latn__ ... </s>". Models in the released NLLB-200 layout (mt-import, and
models fine-tuned from one) are exported as the released models are published: NllbTokenizer files,
decoder_start_token_id </s>, forced_bos_token_id=<id of deu_Latn> (HF) / target_prefix=[["deu_Latn"]]
(CTranslate2, through its own NLLB conversion); mt-import then mt-export --format hf gives back the
original tensors. Each export has a README.md with working code.
Dense models only (MoE layers have no M2M100 / CTranslate2 equivalent).
"""


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-export",
        description="Export a dense checkpoint to Hugging Face M2M100 or CTranslate2.",
        epilog=EXPORT_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, ExportConfig)
    return p


@cli_entry
def export_main(argv: list[str] | None = None) -> int:
    cfg = from_args(ExportConfig, build_export_parser().parse_args(argv))
    if cfg.quantization and cfg.fmt != "ctranslate2":
        raise UserError("--quantization applies to --format ctranslate2 only")
    out = export(
        path=cfg.path,
        out=cfg.out,
        fmt=cfg.fmt,
        data=cfg.data or None,
        spm_model=cfg.spm_model or None,
        quantization=cfg.quantization,
        force=cfg.force,
    )
    print(out)
    return 0


# --- mt-moe-stats --------------------------------------------------------------------------------------
MOE_STATS_EPILOG = """examples:
  # routing statistics of 500 random lines translated eng->deu and eng->fra, and a placement for 4 ranks
  mt-moe-stats --path ckpt/checkpoint_best.pt --input mono.eng_Latn.txt -s eng_Latn -t deu_Latn,fra_Latn \\
      --sample 500 --out work/moe/stats.json --num-ranks 4
  # a model larger than memory (imported NLLB-MoE): 4 experts per layer resident, the others memory-mapped
  mt-moe-stats --path models/nllb-moe/checkpoint.pt --input dev.eng_Latn -s eng_Latn -t deu_Latn \\
      --out work/moe/eng-deu.json --expert-cache 4 --bf16
  # expert-parallel inference with that placement (each rank holds 1/4 of the experts)
  torchrun --standalone --nproc_per_node 4 --no-python mt-generate work/bin --path ckpt/checkpoint_best.pt \\
      --gen-subset devtest -s eng_Latn -t deu_Latn --expert-placement work/moe/placement.json

stats.json: per MoE layer (enc1, dec3, ...) the assignments per expert (2 per token: the expert work;
decoder layers count every decoding step, beams included), first choices, with --coactivation the
expert x expert co-activation counts. placement.json: per layer the experts of each rank, balancing the
work (greedy LPT + swaps, E/W experts per rank), and the max/mean rank load of contiguous blocks,
round-robin and the placement (also printed).
"""


def build_moe_stats_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-moe-stats",
        description="Expert routing statistics of an MoE checkpoint, "
        "and an expert placement that balances the load across ranks.",
        epilog=MOE_STATS_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, MoEStatsConfig)
    add_flags(p, ProgressOptions)
    _add_decoding(p, exclude=("expert_placement", "quantize"), moe_first=True)
    return p


@cli_entry
def moe_stats_main(argv: list[str] | None = None) -> int:
    args = build_moe_stats_parser().parse_args(argv)
    _threads(args, "mt-moe-stats")
    progress = not from_args(ProgressOptions, args).no_progress_bar
    moe_stats(_decoding(args, MoEStatsConfig, seed=args.seed, progress=progress))
    return 0


# --- mt-moe-prune --------------------------------------------------------------------------------------
MOE_PRUNE_EPILOG = """examples:
  # routing of the eng->deu dev set, then keep the half of each layer's experts it uses most
  mt-moe-stats --path models/nllb-moe/checkpoint.pt --input dev/eng_Latn.dev -s eng_Latn -t deu_Latn \\
      --out work/prune/eng-deu.json --expert-cache 4 --bf16
  mt-moe-prune --path models/nllb-moe/checkpoint.pt --stats work/prune/eng-deu.json --keep-share 0.5 \\
      --out models/nllb-moe-eng-deu
  # both directions of the pair: two statistics files (counts are summed), 32 experts per layer
  mt-moe-prune --path models/nllb-moe/checkpoint.pt --stats eng-deu.json,deu-eng.json --keep-experts 32 \\
      --out models/nllb-moe-eng-deu
  # the pruned model decodes like any checkpoint, without --expert-cache
  mt-translate docs.eng_Latn.txt --path models/nllb-moe-eng-deu/checkpoint.pt -s eng_Latn -t deu_Latn --out work/deu

Each MoE layer keeps the same number of experts, those with the most assignments (top-1 + top-2 choices;
--importance first: top-1 only) in the statistics; the gate keeps their rows only, so routing is
renormalised over the kept experts (the full model with the other experts' logits at -inf). The pruned
checkpoint records each layer's original expert ids and the share of the counted routing they cover.
"""


def build_moe_prune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-moe-prune",
        description="Language-specific expert pruning: keep the experts "
        "a language pair uses, in a smaller MoE checkpoint.",
        epilog=MOE_PRUNE_EPILOG,
        formatter_class=_FMT,
    )
    add_flags(p, PruneConfig)
    return p


@cli_entry
def moe_prune_main(argv: list[str] | None = None) -> int:
    prune(from_args(PruneConfig, build_moe_prune_parser().parse_args(argv)))
    return 0
