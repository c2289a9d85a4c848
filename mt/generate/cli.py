"""Command lines of the generation room: argparse -> config dataclass -> one function call.

``mt-generate`` (binarized subset, fairseq output, chrF++), ``mt-interactive`` (stdin -> stdout),
``mt-translate`` (resumable, shardable batch job over files), ``mt-export`` (HF M2M100 / CTranslate2).
Flag names are fairseq's where fairseq had the feature.
"""

from __future__ import annotations

import argparse

import torch

from mt.common.errors import UserError, cli_entry
from mt.generate.moe_inference import MoEInferenceConfig
from mt.generate.search import SearchConfig

_FMT = argparse.RawDescriptionHelpFormatter


def _device(args: argparse.Namespace) -> str:
    if args.cpu or args.device == "cpu":
        return "cpu"
    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    return args.device


def _add_model(p: argparse.ArgumentParser, data_positional: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--path", required=True, metavar="CKPT", help="checkpoint of mt-train (e.g. ckpt/checkpoint_best.pt)"
    )
    if not data_positional:
        g.add_argument(
            "--data",
            default="",
            metavar="DIR",
            help="directory with the dict.txt (+ spm.model) the model was trained with "
            "(default: next to the checkpoint, else the training data directory it records)",
        )
    g.add_argument("--spm-model", default="", metavar="FILE", help="SentencePiece model (default: DATA/spm.model)")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N (default: auto)")
    g.add_argument("--cpu", action="store_true", help="same as --device cpu (fairseq's flag)")
    g.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 matrix products (scores stay float32): about 2x faster on CPUs with AVX512-BF16/AMX, outputs can differ slightly from float32",
    )
    g.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")


def _add_moe(p: argparse.ArgumentParser, parallel: bool = False) -> None:
    g = p.add_argument_group("sparse MoE inference (MoE checkpoints only)")
    g.add_argument(
        "--moe-inference-gating",
        choices=["dynamic", "static"],
        default="dynamic",
        help="dynamic: each expert runs on exactly its tokens, no capacity (default); static: the padded "
        "fairseq/GShard baseline, every expert runs on capacity slots",
    )
    g.add_argument(
        "--moe-eval-capacity-token-fraction",
        type=float,
        default=None,
        metavar="F",
        help="static gating: expert capacity = ceil(F * tokens), tokens over it are dropped; <= 0: the "
        "training capacity (default: the checkpoint's, usually 1.0: nothing dropped)",
    )
    g.add_argument(
        "--expert-cache",
        type=int,
        default=0,
        metavar="K",
        help="keep at most K experts per MoE layer on the compute device, bring the others in on demand "
        "(0: all resident, default); hit rate and expert memory are reported on stderr",
    )
    g.add_argument(
        "--expert-offload",
        choices=["auto", "host", "mmap"],
        default="auto",
        help="where experts outside the cache live: host memory, or memory-mapped from the checkpoint "
        "(default auto: host with a GPU, mmap on CPU)",
    )
    if parallel:
        g.add_argument(
            "--expert-placement",
            default="",
            metavar="JSON",
            help="under torchrun (expert-parallel inference): the experts of each rank, from "
            "mt-moe-stats --num-ranks W (default: contiguous blocks)",
        )


def _moe(args: argparse.Namespace) -> MoEInferenceConfig:
    return MoEInferenceConfig(
        moe_gating=args.moe_inference_gating,
        moe_eval_capacity_token_fraction=args.moe_eval_capacity_token_fraction,
        expert_cache=args.expert_cache,
        expert_offload=args.expert_offload,
        expert_placement=getattr(args, "expert_placement", ""),
    ).check()


def _add_search(p: argparse.ArgumentParser) -> None:
    d = SearchConfig()
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=d.beam, help="beam size; 1 = greedy (default: %(default)s)")
    g.add_argument(
        "--nbest", type=int, default=d.nbest, help="hypotheses to output per sentence (default: %(default)s)"
    )
    g.add_argument(
        "--lenpen",
        type=float,
        default=d.lenpen,
        help="length penalty: score = sum(log p) / len**lenpen; <1 favours short, >1 long (default: %(default)s)",
    )
    g.add_argument(
        "--max-len-a",
        type=float,
        default=d.max_len_a,
        help="max output length = a * src_len + b (default a=%(default)s)",
    )
    g.add_argument("--max-len-b", type=int, default=d.max_len_b, help="(default b=%(default)s)")
    g.add_argument(
        "--min-len", type=int, default=d.min_len, help="minimum output tokens before </s> (default: %(default)s)"
    )
    g.add_argument("--no-repeat-ngram-size", type=int, default=0, help="forbid repeating n-grams of this size (0: off)")
    g.add_argument("--unkpen", type=float, default=0.0, help="subtract this from <unk>'s log-prob (default: 0)")
    g.add_argument("--sampling", action="store_true", help="sample instead of beam search (--beam N = N samples)")
    g.add_argument("--sampling-topk", type=int, default=-1, help="sample from the k most likely tokens (-1: all)")
    g.add_argument(
        "--sampling-topp", type=float, default=-1.0, help="sample from the smallest set with mass >= p (-1: off)"
    )
    g.add_argument("--temperature", type=float, default=1.0, help="divide logits by this (default: 1.0)")
    g.add_argument("--seed", type=int, default=1, help="sampling seed (default: %(default)s)")
    g.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch (default: %(default)s)")
    g.add_argument(
        "--batch-size",
        "--max-sentences",
        type=int,
        default=0,
        dest="batch_size",
        help="sentences per batch (default: no limit besides --max-tokens)",
    )


def _search(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        beam=args.beam,
        lenpen=args.lenpen,
        max_len_a=args.max_len_a,
        max_len_b=args.max_len_b,
        min_len=args.min_len,
        nbest=args.nbest,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        unkpen=args.unkpen,
        sampling=args.sampling,
        sampling_topk=args.sampling_topk,
        sampling_topp=args.sampling_topp,
        temperature=args.temperature,
        seed=args.seed,
    ).check()


# --- mt-generate ---------------------------------------------------------------------------------------
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
    p.add_argument(
        "data", help="binarized data directory (mt-preprocess output: dict.txt, spm.model, {subset}.*.bin/.idx)"
    )
    p.add_argument("--gen-subset", default="test", help="test|devtest, valid|dev, or train (default: %(default)s)")
    p.add_argument("-s", "--source-lang", default="", help="source language code, e.g. eng_Latn")
    p.add_argument("-t", "--target-lang", default="", help="target language code, e.g. deu_Latn")
    p.add_argument(
        "--lang-pairs", default="", help="several directions, comma-separated: eng_Latn-deu_Latn,deu_Latn-eng_Latn"
    )
    p.add_argument(
        "--remove-bpe",
        "--post-process",
        nargs="?",
        const="sentencepiece",
        default=None,
        dest="remove_bpe",
        help="turn H-/S-/T- pieces into text (only 'sentencepiece'; the flag alone means that)",
    )
    p.add_argument("--results-path", default="", help="write generate-{subset}.txt and {src}-{tgt}.hyp here")
    p.add_argument("--quiet", action="store_true", help="only the score line (no S/T/H/D/P lines)")
    p.add_argument(
        "--scoring",
        choices=["chrf", "bleu"],
        default="chrf",
        help="the last line's metric: chrf = chrF2++ (default: NLLB's metric, and this line's "
        "format before the flag existed, so existing scripts keep working; BLEU with 13a is weak "
        "for many FLORES-200 languages) | bleu = fairseq's 'BLEU4 = ...' line (fairseq's default)",
    )
    p.add_argument("--no-progress-bar", action="store_true")
    _add_model(p, data_positional=True)
    _add_search(p)
    _add_moe(p, parallel=True)
    return p


@cli_entry
def generate_main(argv: list[str] | None = None) -> int:
    from mt.generate.generate import GenerateConfig, generate

    args = build_generate_parser().parse_args(argv)
    pairs = [x for x in args.lang_pairs.split(",") if x]
    if args.source_lang or args.target_lang:
        if pairs:
            raise UserError("give either -s/-t or --lang-pairs, not both")
        if not (args.source_lang and args.target_lang):
            raise UserError("-s/--source-lang and -t/--target-lang go together")
        pairs = [f"{args.source_lang}-{args.target_lang}"]
    cfg = GenerateConfig(
        data=args.data,
        path=args.path,
        gen_subset=args.gen_subset,
        lang_pairs=pairs,
        search=_search(args),
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        remove_bpe=args.remove_bpe,
        results_path=args.results_path,
        spm_model=args.spm_model,
        device=_device(args),
        bf16=args.bf16,
        threads=args.threads,
        quiet=args.quiet,
        progress=not args.no_progress_bar,
        moe=_moe(args),
        scoring=args.scoring,
    )
    generate(cfg)
    return 0


# --- mt-interactive ------------------------------------------------------------------------------------
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
    p.add_argument(
        "data_dir",
        nargs="?",
        default="",
        metavar="DATA",
        help="directory with the dict.txt (+ spm.model) the model was trained with, as fairseq-interactive "
        "takes it (same as --data; default: found from the checkpoint)",
    )
    p.add_argument("-s", "--source-lang", required=True)
    p.add_argument("-t", "--target-lang", required=True)
    p.add_argument("--input", default="-", help="file to read instead of stdin")
    p.add_argument("--buffer-size", type=int, default=1, help="lines translated together (default: %(default)s)")
    p.add_argument("--output-format", choices=["plain", "fairseq"], default="plain")
    p.add_argument("--remove-bpe", "--post-process", nargs="?", const="sentencepiece", default=None, dest="remove_bpe")
    _add_model(p)
    _add_search(p)
    _add_moe(p)
    return p


@cli_entry
def interactive_main(argv: list[str] | None = None) -> int:
    from mt.generate.interactive import InteractiveConfig, interactive

    args = build_interactive_parser().parse_args(argv)
    if args.data_dir and args.data and args.data_dir != args.data:
        raise UserError(f"two data directories: DATA {args.data_dir} and --data {args.data}; give one")
    cfg = InteractiveConfig(
        path=args.path,
        src_lang=args.source_lang,
        tgt_lang=args.target_lang,
        data=args.data_dir or args.data,
        spm_model=args.spm_model,
        input=args.input,
        buffer_size=args.buffer_size,
        output_format=args.output_format,
        remove_bpe=args.remove_bpe,
        search=_search(args),
        max_tokens=args.max_tokens,
        device=_device(args),
        bf16=args.bf16,
        threads=args.threads,
        moe=_moe(args),
    )
    interactive(cfg)
    return 0


# --- mt-translate --------------------------------------------------------------------------------------
TRANSLATE_EPILOG = """examples:
  # a text file into two languages; re-run the same command after a crash: finished chunks are kept
  mt-translate mono.eng_Latn.txt --path ckpt/checkpoint_best.pt -s eng_Latn -t fra_Latn,deu_Latn --out work/bt --bf16
  # a directory of JSONL files, the "text" field
  mt-translate data/jsonl/ --field text --path ckpt/checkpoint_best.pt -s eng_Latn -t swh_Latn --out work/swh
  # Parquet column, as a Slurm array of 8 jobs (each takes every 8th chunk; the last one merges)
  mt-translate corpus.parquet --column sentence --shard $SLURM_ARRAY_TASK_ID/8 --path ck.pt -s eng_Latn -t zul_Latn --out work/zul

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
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories (read recursively, sorted)")
    p.add_argument("--out", required=True, help="output directory (chunks, merged outputs, bad_lines.tsv)")
    p.add_argument("-s", "--source-lang", required=True)
    p.add_argument("-t", "--target-lang", required=True, help="one or more target languages, comma-separated")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "text", "tsv", "jsonl", "parquet"],
        dest="fmt",
        help="input format (default: by extension: .tsv, .jsonl, .parquet, else text)",
    )
    p.add_argument("--column", default=None, help="TSV: 1-based field number; Parquet: column name")
    p.add_argument("--field", default=None, help="JSONL: key of the text")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=10000,
        help="records per chunk, the unit of resume and sharding (default: %(default)s)",
    )
    p.add_argument(
        "--shard", default="0/1", help="i/N: translate only chunks k with k %% N == i (0-based, default: 0/1)"
    )
    p.add_argument(
        "--max-source-positions", type=int, default=0, help="longer sources are bad lines (default: the model's limit)"
    )
    p.add_argument(
        "--bad-lines", choices=["empty", "copy"], default="empty", help="output for bad records (default: empty)"
    )
    p.add_argument("--no-merge", action="store_true", help="leave the chunks unmerged")
    p.add_argument("--no-progress-bar", action="store_true")
    _add_model(p)
    _add_search(p)
    _add_moe(p)
    return p


@cli_entry
def translate_main(argv: list[str] | None = None) -> int:
    from mt.generate.batch_job import TranslateConfig, parse_shard, translate_job

    args = build_translate_parser().parse_args(argv)
    i, n = parse_shard(args.shard)
    cfg = TranslateConfig(
        inputs=args.inputs,
        out=args.out,
        path=args.path,
        src_lang=args.source_lang,
        tgt_langs=[t for t in args.target_lang.split(",") if t],
        data=args.data,
        spm_model=args.spm_model,
        fmt=args.fmt,
        column=args.column,
        json_field=args.field,
        chunk_size=args.chunk_size,
        shard_index=i,
        num_shards=n,
        search=_search(args),
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        max_source_positions=args.max_source_positions,
        bad_lines=args.bad_lines,
        device=_device(args),
        bf16=args.bf16,
        threads=args.threads,
        progress=not args.no_progress_bar,
        merge=not args.no_merge,
        moe=_moe(args),
    )
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
    p.add_argument("--format", choices=["hf", "ctranslate2"], default="hf", dest="fmt")
    p.add_argument("--path", required=True, metavar="CKPT")
    p.add_argument("--out", required=True, help="output directory (new or empty; see --force)")
    p.add_argument(
        "--data", default="", help="directory with dict.txt and spm.model (default: as mt-generate finds them)"
    )
    p.add_argument("--spm-model", default="")
    p.add_argument(
        "--quantization",
        default=None,
        help="CTranslate2 only: int8, int8_float32, float16, bfloat16... (default: float32 weights)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out: replaces the files the export writes, keeps all others",
    )
    return p


@cli_entry
def export_main(argv: list[str] | None = None) -> int:
    from mt.generate.export import export

    args = build_export_parser().parse_args(argv)
    if args.quantization and args.fmt != "ctranslate2":
        raise UserError("--quantization applies to --format ctranslate2 only")
    out = export(
        args.path, args.out, args.fmt, args.data or None, args.spm_model or None, args.quantization, args.force
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
    p.add_argument("--input", required=True, metavar="FILE", help="text, one sentence per line")
    p.add_argument("-s", "--source-lang", required=True)
    p.add_argument("-t", "--target-lang", required=True, help="one or more target languages, comma-separated")
    p.add_argument(
        "--sample", type=int, default=0, metavar="N", help="translate N random lines, drawn with --seed (default: all)"
    )
    p.add_argument("--out", required=True, metavar="JSON", help="statistics file (stats.json)")
    p.add_argument(
        "--num-ranks",
        type=int,
        default=0,
        metavar="W",
        help="also write an expert placement for W ranks (expert-parallel inference)",
    )
    p.add_argument("--placement", default="", metavar="JSON", help="where (default: placement.json beside --out)")
    p.add_argument("--coactivation", action="store_true", help="also count expert x expert co-activations")
    p.add_argument("--no-progress-bar", action="store_true")
    _add_model(p)
    _add_moe(p)
    _add_search(p)
    p.set_defaults(beam=4)
    return p


@cli_entry
def moe_stats_main(argv: list[str] | None = None) -> int:
    from mt.generate.moe_stats import MoEStatsConfig, moe_stats

    args = build_moe_stats_parser().parse_args(argv)
    search = _search(args)
    cfg = MoEStatsConfig(
        path=args.path,
        input=args.input,
        src_lang=args.source_lang,
        tgt_langs=[t for t in args.target_lang.split(",") if t],
        out=args.out,
        sample=args.sample,
        seed=args.seed,
        num_ranks=args.num_ranks,
        placement=args.placement,
        coactivation=args.coactivation,
        data=args.data,
        spm_model=args.spm_model,
        device=_device(args),
        bf16=args.bf16,
        threads=args.threads,
        search=search,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        progress=not args.no_progress_bar,
        moe=_moe(args),
    )
    moe_stats(cfg)
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
    p.add_argument("--path", required=True, metavar="CKPT", help="the MoE checkpoint to prune")
    p.add_argument(
        "--stats",
        required=True,
        metavar="JSON[,JSON...]",
        help="mt-moe-stats output(s) on the language pair's dev set (counts of several are summed)",
    )
    keep = p.add_mutually_exclusive_group(required=True)
    keep.add_argument("--keep-experts", type=int, default=0, metavar="N", help="experts kept in each MoE layer (>= 2)")
    keep.add_argument(
        "--keep-share",
        type=float,
        default=0.0,
        metavar="F",
        help="share of each MoE layer's experts kept, in (0, 1] (0.25: 32 of 128)",
    )
    p.add_argument(
        "--importance",
        choices=["assignments", "first"],
        default="assignments",
        help="which counts rank the experts: assignments (top-1 and top-2 choices, the expert's work; "
        "default) or first (top-1 choices)",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for checkpoint.pt (+ expert files), dict.txt, spm.model"
    )
    p.add_argument(
        "--data",
        default="",
        metavar="DIR",
        help="directory with the model's dict.txt (default: as mt-generate finds it)",
    )
    p.add_argument("--spm-model", default="", metavar="FILE", help="SentencePiece model (default: beside dict.txt)")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier checkpoint in --out")
    return p


@cli_entry
def moe_prune_main(argv: list[str] | None = None) -> int:
    from mt.generate.moe_prune import PruneConfig, prune

    args = build_moe_prune_parser().parse_args(argv)
    prune(
        PruneConfig(
            path=args.path,
            stats=[x for x in args.stats.split(",") if x],
            out=args.out,
            keep_experts=args.keep_experts,
            keep_share=args.keep_share,
            importance=args.importance,
            data=args.data,
            spm_model=args.spm_model,
            force=args.force,
        )
    )
    return 0
