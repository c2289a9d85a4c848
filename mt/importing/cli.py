"""``mt-import``: command line of ``mt.importing`` (flags from ``ImportConfig`` -> one call to ``import_model``)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mt.common.errors import cli_entry
from mt.common.flags import add_flags, arg, from_args
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


@dataclass
class ImportConfig:
    """``mt-import``'s options; each field is also its flag."""

    src: str = arg(help="HF model folder (--format hf) or fairseq checkpoint file", positional=True, metavar="SRC")
    fmt: str = arg("", "what SRC is", name="--format", choices=["hf", "fairseq"], required=True)
    out: str = arg("", "folder to write checkpoint.pt, dict.txt, spm.model", metavar="DIR", required=True)
    spm_model: str = arg("", "SentencePiece model (default: SRC's sentencepiece.bpe.model)", metavar="FILE")
    dict_path: str = arg(
        "", "fairseq: the model's dictionary.txt (default: next to the checkpoint)", name="--dict", metavar="FILE"
    )
    langs: str = arg(
        "",
        "fairseq: the language list in training order, a file (langs.txt) or eng_Latn,fra_Latn,... "
        "(default: the one stored in the checkpoint)",
        metavar="FILE|LIST",
    )
    dtype: str = arg(
        "keep", "store the weights in this type (default: keep the source's)", choices=list(DTYPES), show_default=False
    )
    force: bool = arg(False, "replace checkpoint.pt / dict.txt / spm.model in --out")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mt-import", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_flags(p, ImportConfig)
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
def import_main(argv: list[str] | None = None) -> int:
    cfg = from_args(ImportConfig, build_parser().parse_args(argv))
    t0 = time.perf_counter()
    path = import_model(
        fmt=cfg.fmt,
        src=Path(cfg.src),
        out=Path(cfg.out),
        spm_model=Path(cfg.spm_model) if cfg.spm_model else None,
        dict_path=Path(cfg.dict_path) if cfg.dict_path else None,
        langs=cfg.langs,
        dtype=DTYPES[cfg.dtype],
        force=cfg.force,
    )
    experts = len(list(path.parent.glob("checkpoint-rank-*.pt")))
    extra = f", {experts} expert files" if experts else ""
    print(f"mt-import: wrote {path} (+ dict.txt, spm.model{extra}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0
