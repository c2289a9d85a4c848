"""``mt-import``: command line of ``mt.importing`` (argparse -> one call to ``import_model``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from mt.common.errors import cli_entry
from mt.importing import convert

DTYPES = {"keep": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

DESCRIPTION = """\
Import a released NLLB-200 or NLLB-MoE model (Hugging Face or fairseq files) as a checkpoint folder.

Writes checkpoint.pt, dict.txt and spm.model into --out (an MoE model adds checkpoint-rank-{e}.pt, one
file per expert); mt-generate, mt-translate, mt-interactive, mt-moe-stats and Translator load it like a
model of mt-train (--path DIR/checkpoint.pt).

  --format hf       SRC is a Hugging Face model folder (config.json with model_type m2m_100 or nllb-moe,
                    model.safetensors or pytorch_model.bin, possibly sharded, sentencepiece.bpe.model and
                    the tokenizer files)
  --format fairseq  SRC is a fairseq checkpoint.pt, or for NLLB-MoE its checkpoint_2_300000-shared.pt with
                    the checkpoint_2_300000-rank-N.pt expert files beside it; dictionary.txt and
                    sentencepiece.bpe.model are taken from its folder unless given; the language list from
                    the checkpoint unless --langs. The pickles are read without fairseq and without running
                    code from them.

Weights are read memory-mapped, one tensor at a time: peak memory is about one copy of the model, and for
an MoE model the dense part plus one expert per MoE layer (experts are written one at a time). To run the
54.5B NLLB-MoE on one machine: --dtype bfloat16 here, then --expert-cache K --bf16 when translating.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-import", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("src", metavar="SRC", help="HF model folder (--format hf) or fairseq checkpoint file")
    p.add_argument("--format", required=True, choices=["hf", "fairseq"], help="what SRC is")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write checkpoint.pt, dict.txt, spm.model")
    p.add_argument(
        "--spm-model", default="", metavar="FILE", help="SentencePiece model (default: SRC's sentencepiece.bpe.model)"
    )
    p.add_argument(
        "--dict",
        default="",
        metavar="FILE",
        help="fairseq: the model's dictionary.txt (default: next to the checkpoint)",
    )
    p.add_argument(
        "--langs",
        default="",
        metavar="FILE|LIST",
        help="fairseq: the language list in training order, a file (langs.txt) or eng_Latn,fra_Latn,... "
        "(default: the one stored in the checkpoint)",
    )
    p.add_argument(
        "--dtype",
        default="keep",
        choices=list(DTYPES),
        help="store the weights in this type (default: keep the source's)",
    )
    p.add_argument("--force", action="store_true", help="replace checkpoint.pt / dict.txt / spm.model in --out")
    return p


def import_model(
    fmt: str,
    src: Path,
    out: Path,
    spm_model: Path | None = None,
    dict_path: Path | None = None,
    langs: str = "",
    dtype: torch.dtype | None = None,
    force: bool = False,
) -> Path:
    """Import ``src`` into ``out``; returns the checkpoint path. Nothing is written when any check fails."""
    if fmt == "hf":
        from mt.importing import hf

        imp = hf.read(src, spm_model)
    else:
        from mt.importing import fairseq

        imp = fairseq.read(src, dict_path, spm_model, langs)
    convert.check_outputs(imp.inputs, out, force, imp.cfg.moe_expert_count if imp.cfg.moe_freq else 0)
    return convert.write(imp, out, dtype)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    path = import_model(
        args.format,
        Path(args.src),
        Path(args.out),
        Path(args.spm_model) if args.spm_model else None,
        Path(args.dict) if args.dict else None,
        args.langs,
        DTYPES[args.dtype],
        args.force,
    )
    experts = len(list(path.parent.glob("checkpoint-rank-*.pt")))
    extra = f", {experts} expert files" if experts else ""
    print(f"mt-import: wrote {path} (+ dict.txt, spm.model{extra}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0
